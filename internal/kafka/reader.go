package kafka

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"
	"github.com/grete-go/grete/stream"
)

// Record is one record that ReadRange read. Key and Value are nil for a
// null key or value (a tombstone has a nil Value).
type Record struct {
	Offset     int64
	Key, Value []byte
}

// ReadRange calls fn with batches of up to batch records of p whose offsets
// lie in [from, to], in order. from may be Oldest; a from that the log no
// longer holds (compaction or retention moved its start) reads from the
// start. Offsets without a record are skipped, and so are the records of
// aborted transactions when the connection reads committed records only.
// Callers pass a to below the high watermark: ReadRange waits for records
// up to to. The records are fn's to keep.
//
// ReadRange is made for replaying a log. It fetches on a connection of its
// own to the partition's leader, so that ranges read at once do not wait
// behind each other's requests, and it fetches the next records while fn
// handles the last ones. Records go to fn straight from the fetch
// responses, without the per-record hand-offs of a sarama consumer.
func (c *Conn) ReadRange(ctx context.Context, p stream.Partition, from, to int64, batch int, fn func([]Record) error) error {
	if to < 0 || (from >= 0 && from > to) {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	fetched := make(chan fetchResult, 1)
	go c.fetchRange(ctx, p, from, to, fetched)
	defer func() {
		cancel()
		for range fetched { // until the fetcher is gone
		}
	}()
	for f := range fetched {
		if f.err != nil {
			return fmt.Errorf("read %s: %w", p, f.err)
		}
		for rs := f.recs; len(rs) > 0; {
			n := min(batch, len(rs))
			if err := fn(rs[:n:n]); err != nil {
				return err
			}
			rs = rs[n:]
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("read %s: %w", p, err)
	}
	return nil
}

type fetchResult struct {
	recs []Record
	err  error
}

// DefaultPatience is how long a read keeps retrying a fetch that fails for
// a reason that may pass (a leader moving, a broker restarting) unless the
// connection says otherwise (Conn.Patience).
const DefaultPatience = 2 * time.Minute

// fetchRange fetches the records of p in [from, to] and sends them to out,
// then an error if it fails, and closes out.
func (c *Conn) fetchRange(ctx context.Context, p stream.Partition, from, to int64, out chan<- fetchResult) {
	defer close(out)
	f := fetcher{c: c, p: p, cfg: c.client.Config()}
	defer f.disconnect()
	err := func() error {
		offset := from
		if offset < 0 {
			var err error
			if offset, err = c.client.GetOffset(p.Topic, p.Partition, sarama.OffsetOldest); err != nil {
				return err
			}
		}
		patience := c.patience
		if patience <= 0 {
			patience = DefaultPatience
		}
		var failing time.Time // since when fetches fail
		for offset <= to {
			block, err := f.fetch(offset)
			switch {
			case errors.Is(err, sarama.ErrOffsetOutOfRange) && offset < block.LogStartOffset:
				offset = block.LogStartOffset // what was before is gone
				continue
			case err != nil && retriable(err):
				if failing.IsZero() {
					failing = time.Now()
				} else if time.Since(failing) > patience {
					return &UnreachableError{What: "read " + p.String(), Since: failing, Err: err}
				}
				f.disconnect()
				_ = c.client.RefreshMetadata(p.Topic)
				select {
				case <-time.After(f.cfg.Consumer.Retry.Backoff):
				case <-ctx.Done():
					return nil
				}
				continue
			case err != nil:
				return err
			}
			failing = time.Time{}
			recs, next, err := records(block, offset, to, f.cfg.Consumer.IsolationLevel == sarama.ReadCommitted)
			if err != nil {
				return err
			}
			// A fetch can bring nothing new: reading committed records, the
			// broker holds back those of an open transaction.
			offset = next
			if len(recs) > 0 {
				select {
				case out <- fetchResult{recs: recs}:
				case <-ctx.Done():
					return nil
				}
			}
		}
		return nil
	}()
	if err != nil {
		select {
		case out <- fetchResult{err: err}:
		case <-ctx.Done():
		}
	}
}

// fetcher fetches from one partition on a connection of its own.
type fetcher struct {
	c      *Conn
	p      stream.Partition
	cfg    *sarama.Config
	broker *sarama.Broker // nil until connected
}

// readMaxWait is how long a fetch of ReadRange waits for data: a read ends
// at an offset it knows exists, so waiting for data past it would only
// hold the read.
const readMaxWait = 10 * time.Millisecond

// fetchVersion is the Fetch request version: Grete speaks Kafka 2.8 or
// later (see Version).
const fetchVersion = 12

// fetch fetches the records of the partition from offset on, connecting to
// its leader first if need be. The block comes back with its error.
func (f *fetcher) fetch(offset int64) (*sarama.FetchResponseBlock, error) {
	if f.broker == nil {
		leader, err := f.c.client.Leader(f.p.Topic, f.p.Partition)
		if err != nil {
			return nil, err
		}
		b := sarama.NewBroker(leader.Addr())
		if err := b.Open(f.cfg); err != nil {
			return nil, err
		}
		f.broker = b
	}
	req := &sarama.FetchRequest{
		Version:      fetchVersion,
		MaxWaitTime:  int32(readMaxWait / time.Millisecond),
		MinBytes:     f.cfg.Consumer.Fetch.Min,
		MaxBytes:     f.cfg.Consumer.Fetch.MaxBytes,
		Isolation:    f.cfg.Consumer.IsolationLevel,
		SessionEpoch: -1, // no fetch session
	}
	// The broker returns a first batch larger than the limit whole
	// (KIP-74): every fetch makes progress.
	req.AddBlock(f.p.Topic, f.p.Partition, offset, f.cfg.Consumer.Fetch.Default, -1)
	resp, err := f.broker.Fetch(req)
	if err != nil {
		return nil, err
	}
	block := resp.GetBlock(f.p.Topic, f.p.Partition)
	if block == nil {
		return nil, sarama.ErrIncompleteResponse
	}
	if block.Err != sarama.ErrNoError {
		return block, block.Err
	}
	return block, nil
}

func (f *fetcher) disconnect() {
	if f.broker != nil {
		_ = f.broker.Close()
		f.broker = nil
	}
}

// retriable reports whether a fetch that failed with err may succeed on a
// new connection to the partition's leader, as the metadata then says.
func retriable(err error) bool {
	var kerr sarama.KError
	if !errors.As(err, &kerr) {
		return Transient(err) // the connection failed, or the leader is unknown
	}
	switch kerr {
	case sarama.ErrNotLeaderForPartition, sarama.ErrLeaderNotAvailable, sarama.ErrReplicaNotAvailable,
		sarama.ErrUnknownTopicOrPartition, sarama.ErrRequestTimedOut, sarama.ErrNetworkException,
		sarama.ErrFencedLeaderEpoch, sarama.ErrUnknownLeaderEpoch, sarama.ErrOffsetNotAvailable,
		sarama.ErrBrokerNotAvailable, sarama.ErrIncompleteResponse:
		return true
	}
	return false
}

// records returns the records of block with offsets in [from, to] and the
// offset to fetch next. Control records are left out, and so are the
// records of aborted transactions when committed says so.
func records(block *sarama.FetchResponseBlock, from, to int64, committed bool) (recs []Record, next int64, err error) {
	next = from
	n := 0
	for _, set := range block.RecordsSet {
		if set.RecordBatch != nil {
			n += len(set.RecordBatch.Records)
		}
	}
	recs = make([]Record, 0, n)
	aborted := map[int64]bool{} // producers in an aborted transaction
	txns := block.AbortedTransactions
	for _, set := range block.RecordsSet {
		b := set.RecordBatch
		if b == nil {
			return nil, 0, errors.New("records in the legacy message format (before Kafka 0.11)")
		}
		if b.PartialTrailingRecord {
			break // cut short by the size limit: the next fetch has it
		}
		last := b.LastOffset()
		for len(txns) > 0 && txns[0].FirstOffset <= last {
			aborted[txns[0].ProducerID] = true
			txns = txns[1:]
		}
		switch {
		case b.Control:
			// An abort marker (control record type 0) ends the
			// producer's aborted transaction.
			if len(b.Records) > 0 && len(b.Records[0].Key) >= 4 && binary.BigEndian.Uint16(b.Records[0].Key[2:]) == 0 {
				delete(aborted, b.ProducerID)
			}
		case committed && b.IsTransactional && aborted[b.ProducerID]:
		default:
			for _, r := range b.Records {
				if off := b.FirstOffset + r.OffsetDelta; off >= from && off <= to {
					recs = append(recs, Record{Offset: off, Key: r.Key, Value: r.Value})
				}
			}
		}
		next = max(next, last+1)
	}
	return recs, next, nil
}
