// Package tasktest runs a Grete task in memory, without a broker, so that
// its logic can be tested in a plain unit test: feed it messages, advance a
// fake clock to make its Window run, and check what it sent and what it
// asked its container for.
//
// # Basics
//
// A [Driver] plays the part of the job's runner for one task: it runs the
// task on the task loop a job runs (the same code decides what a failure,
// a rollback, a dead letter or a commit does), with outputs, changelogs and
// checkpoints kept in memory and a clock of its own. A task that passes its
// tests here behaves the same in a job:
//
//   - Init, Process, Window and Close are called one at a time, never
//     concurrently, and Init comes before anything else.
//   - A Process error or panic is handled by the error policy ([OnError]):
//     Fail stops the task with a *task.ProcessError naming the message;
//     Skip and DeadLetter count the message and go on, DeadLetter copying it
//     to the dead-letter topic with the runner's headers. Panics become
//     *task.PanicError values, with the stack. Whatever the policy, the
//     store writes of a call that failed are rolled back, so none of them
//     is committed (what it sent before it failed is sent: outputs are at
//     least once). A test in this package runs the same task in a job
//     and in a Driver and checks that they agree.
//   - Window runs once per elapsed Window period of the driver's clock,
//     which moves only when the test calls [Driver.Advance]. A task that
//     does not implement task.WindowableTask is never windowed.
//   - Coordinator.Commit and Coordinator.Shutdown are recorded; a commit
//     and a stop take effect after the call that asked for them, as in a job.
//   - Input offsets are tracked like a checkpoint would track them
//     ([Driver.Offsets], [Driver.Checkpoint]).
//
// A typical test:
//
//	d := tasktest.New(&WordCount{}, tasktest.Inputs("lines"), tasktest.Window(time.Minute))
//	defer d.Close(ctx)
//	err := d.Feed(ctx, stream.Message{Value: []byte("to be or not to be")})
//	err = d.Advance(ctx, time.Minute) // one Window call
//	counts := d.OutputsTo("counts")
//
// To test a task under the exact settings of a production job, build the
// driver with [FromJob].
//
// # Caveats
//
// The driver fills in what a test leaves out of a fed message: the topic
// (the first input), the partition (the task's partition, for a
// partitioned input), the offset (the next one of the partition) and the
// timestamp (the driver's clock). Messages must still belong to the task's
// inputs and have increasing offsets per partition, as they would in Kafka.
//
// Outputs are recorded exactly as sent: no partition is chosen and a zero
// Timestamp stays zero. Nothing is serialized, so a message that Kafka
// would refuse (too large, say) is accepted here.
//
// The clock drives only Window and the periodic commits. The task's own
// calls to time.Now see real time; tasks that need a controllable clock
// should take one as a dependency.
//
// After the task fails or asks for shutdown it is stopped, like a job's
// task: it gets no further messages or Window calls, and Feed and Advance
// report undelivered work with an error wrapping [ErrStopped]. Close still
// runs the task's Close.
package tasktest
