package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"syscall"
	"time"

	"github.com/IBM/sarama"
)

// Transient reports whether err may pass if the request is sent again: the
// broker could not be reached or the connection broke, a partition's
// leader or a group's coordinator is moving or loading, the broker is
// restarting. Answers that retrying cannot change (authorization, a
// refused configuration, a missing topic that nobody creates) are not
// transient.
func Transient(err error) bool {
	var pe permanentError
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.As(err, &pe) {
		return false
	}
	// A certificate the client refuses, or a plaintext client talking to
	// a TLS listener, fails the same way every time.
	var cve *tls.CertificateVerificationError
	var rhe tls.RecordHeaderError
	var uae x509.UnknownAuthorityError
	var hne x509.HostnameError
	if errors.As(err, &cve) || errors.As(err, &rhe) || errors.As(err, &uae) || errors.As(err, &hne) {
		return false
	}
	var kerr sarama.KError
	if errors.As(err, &kerr) {
		switch kerr {
		case sarama.ErrNotLeaderForPartition, sarama.ErrLeaderNotAvailable, sarama.ErrReplicaNotAvailable,
			sarama.ErrRequestTimedOut, sarama.ErrNetworkException, sarama.ErrBrokerNotAvailable,
			sarama.ErrNotCoordinatorForConsumer, sarama.ErrConsumerCoordinatorNotAvailable, sarama.ErrOffsetsLoadInProgress,
			sarama.ErrNotEnoughReplicas, sarama.ErrNotEnoughReplicasAfterAppend, sarama.ErrKafkaStorageError,
			sarama.ErrFencedLeaderEpoch, sarama.ErrUnknownLeaderEpoch, sarama.ErrOffsetNotAvailable,
			sarama.ErrIncompleteResponse, sarama.ErrUnknownTopicOrPartition, sarama.ErrRebalanceInProgress,
			sarama.ErrNotController, sarama.ErrThrottlingQuotaExceeded:
			return true
		}
		return false
	}
	var ne net.Error
	var oe *net.OpError
	switch {
	case errors.Is(err, sarama.ErrOutOfBrokers), errors.Is(err, sarama.ErrNotConnected),
		errors.Is(err, sarama.ErrShuttingDown), errors.Is(err, sarama.ErrControllerNotAvailable),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.As(err, &ne), errors.As(err, &oe):
		return true
	}
	return false
}

// PatientProducer makes a producer client configured by cfg ride through a
// broker restart or a short outage: a record is retried for about patience
// before it is given up, and looking up a partition's leader waits up to
// a quarter of that (at most 30 s) for a broker to answer. Sarama gives a
// record up at once when it cannot find its leader, so without this a
// broker restart fails every record sent meanwhile. The client should
// serve only the producer: its metadata requests wait that long.
func PatientProducer(cfg *sarama.Config, patience time.Duration) {
	cfg.Producer.Retry.Max = int(patience/time.Second) + 10
	cfg.Producer.Retry.BackoffFunc = func(retries, _ int) time.Duration {
		return min(100*time.Millisecond<<min(retries, 4), time.Second)
	}
	lookup := min(patience/4, 30*time.Second)
	cfg.Metadata.Retry.Max = int(lookup/(500*time.Millisecond)) + 1
	cfg.Metadata.Retry.BackoffFunc = func(retries, _ int) time.Duration {
		return min(50*time.Millisecond<<min(retries, 4), 500*time.Millisecond)
	}
}

// Permanent marks err as not transient, whatever it wraps.
func Permanent(err error) error { return permanentError{err} }

type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

// UnreachableError is the error of a request that kept failing for a
// reason that may pass (see Transient) for longer than the caller's
// patience.
type UnreachableError struct {
	What string // the request, when Err does not say it

	Since time.Time // its first failure
	Err   error     // its last failure
}

func (e *UnreachableError) Error() string {
	msg := fmt.Sprintf("the Kafka cluster has been unreachable since %s (%s): %v",
		e.Since.Format(time.TimeOnly), time.Since(e.Since).Round(time.Second), e.Err)
	if e.What != "" {
		msg = e.What + ": " + msg
	}
	return msg
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Retry calls fn until it succeeds, fails for a reason that is not
// transient, ctx ends, or it has kept failing for patience; then it returns
// fn's error (an *UnreachableError once patience ran out). Failures are
// logged at warning level, one line per growing backoff.
func Retry(ctx context.Context, log *slog.Logger, patience time.Duration, what string, fn func() error) error {
	var first time.Time
	backoff := 100 * time.Millisecond
	for {
		err := fn()
		if err == nil || !Transient(err) {
			return err
		}
		if ctx.Err() != nil {
			return err
		}
		now := time.Now()
		if first.IsZero() {
			first = now
		}
		if now.Sub(first) >= patience {
			return &UnreachableError{What: what, Since: first, Err: err}
		}
		if log != nil {
			log.Warn("Kafka request failed; retrying", "request", what, "err", err, "backoff", backoff, "failing_for", now.Sub(first).Round(time.Millisecond))
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}
