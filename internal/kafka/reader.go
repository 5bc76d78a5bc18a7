package kafka

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"
	"github.com/grete-go/grete/stream"
)

// ReadRange calls fn with batches of the records of p whose offsets lie in
// [from, to], in order. from may be Oldest. Offsets without a record
// (removed by compaction) are skipped: reading stops at the first record
// past to. Callers pass a to below the partition's high watermark: the
// record there always exists, since compaction keeps the last batch. It
// uses its own consumer, so many ranges can be read at once.
func (c *Conn) ReadRange(ctx context.Context, p stream.Partition, from, to int64, batch int, fn func([]*sarama.ConsumerMessage) error) error {
	if to < 0 || (from >= 0 && from > to) {
		return nil
	}
	consumer, err := sarama.NewConsumerFromClient(c.Client)
	if err != nil {
		return fmt.Errorf("read %s: %w", p, err)
	}
	defer consumer.Close()
	pc, err := consumer.ConsumePartition(p.Topic, p.Partition, from)
	if errors.Is(err, sarama.ErrOffsetOutOfRange) {
		pc, err = consumer.ConsumePartition(p.Topic, p.Partition, sarama.OffsetOldest)
	}
	if err != nil {
		return fmt.Errorf("read %s from %d: %w", p, from, err)
	}
	defer pc.AsyncClose()
	buf := make([]*sarama.ConsumerMessage, 0, batch)
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		err := fn(buf)
		buf = buf[:0]
		return err
	}
	idle := time.NewTicker(100 * time.Millisecond)
	defer idle.Stop()
	for {
		select {
		case m, ok := <-pc.Messages():
			if !ok {
				return fmt.Errorf("read %s: the consumer stopped before offset %d", p, to)
			}
			if m.Offset > to {
				return flush()
			}
			buf = append(buf, m)
			if m.Offset == to {
				return flush()
			}
			if len(buf) == batch {
				if err := flush(); err != nil {
					return err
				}
			}
		case e := <-pc.Errors():
			return fmt.Errorf("read %s: %w", p, e.Err)
		case <-idle.C:
			// Hand over what arrived so far rather than hold it.
			if err := flush(); err != nil {
				return err
			}
		case <-ctx.Done():
			return fmt.Errorf("read %s: %w", p, ctx.Err())
		}
	}
}
