package main

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/grete-go/grete/task"
)

// runJobs runs the jobs until ctx ends or one of them fails; a failure
// stops the others gracefully.
func runJobs(ctx context.Context, jobs ...*task.Job) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = j.Run(ctx)
			if errs[i] != nil {
				errs[i] = fmt.Errorf("job %s: %w", j.Name, errs[i])
			}
			cancel()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
