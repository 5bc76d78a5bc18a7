package checkpoint_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/grete-go/grete/checkpoint"
	"github.com/grete-go/grete/stream"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
)

func sample() checkpoint.Checkpoint {
	return checkpoint.Checkpoint{
		ID:   42,
		Task: "task-3",
		Inputs: map[stream.Partition]int64{
			{Topic: "orders", Partition: 3}:   1000,
			{Topic: "payments", Partition: 3}: 0,
			{Topic: "rates", Partition: 0}:    7,
		},
		Changelogs: map[string]int64{"sessions": 99, "empty": -1},
		WrittenAt:  time.Date(2024, 6, 1, 12, 30, 45, 123_000_000, time.UTC),
	}
}

// sameCheckpoint compares checkpoints; WrittenAt is compared as an instant
// (the record keeps milliseconds, not the location).
func sameCheckpoint(t *testing.T, want, got checkpoint.Checkpoint) {
	t.Helper()
	require.True(t, want.WrittenAt.Equal(got.WrittenAt), "WrittenAt: want %v, got %v", want.WrittenAt, got.WrittenAt)
	got.WrittenAt = want.WrittenAt
	require.Equal(t, want, got)
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		cp   checkpoint.Checkpoint
		want checkpoint.Checkpoint // when it differs from cp
	}{
		{name: "full", cp: sample()},
		{
			name: "empty maps",
			cp:   checkpoint.Checkpoint{ID: 1, Task: "task-0", Inputs: map[stream.Partition]int64{}, Changelogs: map[string]int64{}, WrittenAt: time.UnixMilli(1)},
		},
		{
			name: "nil maps decode as empty ones",
			cp:   checkpoint.Checkpoint{ID: 2, Task: "task-1", WrittenAt: time.UnixMilli(0)},
			want: checkpoint.Checkpoint{ID: 2, Task: "task-1", Inputs: map[stream.Partition]int64{}, Changelogs: map[string]int64{}, WrittenAt: time.UnixMilli(0)},
		},
		{
			name: "WrittenAt keeps milliseconds",
			cp:   checkpoint.Checkpoint{ID: 3, Task: "t", Inputs: map[stream.Partition]int64{}, Changelogs: map[string]int64{}, WrittenAt: time.Date(2024, 1, 1, 0, 0, 0, 987_654_321, time.UTC)},
			want: checkpoint.Checkpoint{ID: 3, Task: "t", Inputs: map[stream.Partition]int64{}, Changelogs: map[string]int64{}, WrittenAt: time.Date(2024, 1, 1, 0, 0, 0, 987_000_000, time.UTC)},
		},
		{
			name: "largest values",
			cp: checkpoint.Checkpoint{
				ID: 1<<64 - 1, Task: "task-2147483647",
				Inputs:     map[stream.Partition]int64{{Topic: "t", Partition: 1<<31 - 1}: 1<<63 - 1},
				Changelogs: map[string]int64{"s": 1<<63 - 1},
				WrittenAt:  time.UnixMilli(1 << 50),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := checkpoint.Encode(tt.cp)
			require.NoError(t, err)
			got, err := checkpoint.Decode(b)
			require.NoError(t, err)
			want := tt.want
			if want.Task == "" {
				want = tt.cp
			}
			sameCheckpoint(t, want, got)
		})
	}
}

// The field names and the version are the on-disk format: a rename would
// make older records unreadable, so this test pins them.
func TestEncodedFormat(t *testing.T) {
	b, err := checkpoint.Encode(sample())
	require.NoError(t, err)
	var raw map[string]any
	require.NoError(t, msgpack.Unmarshal(b, &raw))
	require.ElementsMatch(t, []string{"version", "id", "task", "inputs", "changelogs", "written_at"}, keys(raw))
	require.EqualValues(t, checkpoint.Version, raw["version"])
	require.EqualValues(t, 42, raw["id"])
	require.Equal(t, "task-3", raw["task"])
	require.EqualValues(t, sample().WrittenAt.UnixMilli(), raw["written_at"])
	inputs, ok := raw["inputs"].(map[string]any)
	require.True(t, ok, "inputs is a map, got %T", raw["inputs"])
	require.EqualValues(t, 1000, inputs["orders/3"])
	require.EqualValues(t, 7, inputs["rates/0"])
}

func keys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// record msgpack-encodes a record by hand, the way another writer (or a
// future Grete) could.
func record(t *testing.T, fields map[string]any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(fields)
	require.NoError(t, err)
	return b
}

func TestDecodeHandWrittenRecord(t *testing.T) {
	b := record(t, map[string]any{
		"version": 1, "id": 5, "task": "task-1",
		"inputs":     map[string]int64{"clicks/1": 17},
		"changelogs": map[string]int64{"counts": 3},
		"written_at": int64(1700000000123),
	})
	got, err := checkpoint.Decode(b)
	require.NoError(t, err)
	sameCheckpoint(t, checkpoint.Checkpoint{
		ID: 5, Task: "task-1",
		Inputs:     map[stream.Partition]int64{{Topic: "clicks", Partition: 1}: 17},
		Changelogs: map[string]int64{"counts": 3},
		WrittenAt:  time.UnixMilli(1700000000123),
	}, got)
}

func TestDecodeRefusesNewerVersion(t *testing.T) {
	b := record(t, map[string]any{
		"version": checkpoint.Version + 1, "id": 9, "task": "task-0",
		"inputs":     map[string]int64{"in/0": 5},
		"changelogs": map[string]int64{},
		"written_at": int64(1700000000000),
		"new_field":  "something this build does not know",
	})
	_, err := checkpoint.Decode(b)
	require.ErrorIs(t, err, checkpoint.ErrUnsupportedVersion)
	require.ErrorContains(t, err, fmt.Sprintf("record version %d", checkpoint.Version+1))
	require.ErrorContains(t, err, "upgrade")
}

func TestDecodeRefusesGarbage(t *testing.T) {
	valid, err := checkpoint.Encode(sample())
	require.NoError(t, err)
	tests := []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "checkpoint: decode"},
		{"text", []byte("this is not msgpack at all"), "checkpoint: decode"},
		{"truncated", valid[:len(valid)/2], "checkpoint: decode"},
		{"msgpack string", mustMarshal(t, "task-0"), "checkpoint: decode"},
		{"no version", record(t, map[string]any{"id": 1, "task": "task-0"}), "no version"},
		{"version zero", record(t, map[string]any{"version": 0, "id": 1}), "no version"},
		{"negative version", record(t, map[string]any{"version": -3}), "no version"},
		{"version of the wrong type", record(t, map[string]any{"version": "1"}), "checkpoint: decode"},
		{"inputs of the wrong type", record(t, map[string]any{"version": 1, "inputs": []int{1, 2}}), "checkpoint: decode"},
		{"input partition without a slash", record(t, map[string]any{"version": 1, "inputs": map[string]int64{"orders": 4}}), "not of the form topic/partition"},
		{"input partition not a number", record(t, map[string]any{"version": 1, "inputs": map[string]int64{"orders/x": 4}}), "not of the form topic/partition"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := checkpoint.Decode(tt.b)
			require.ErrorContains(t, err, tt.want)
			require.False(t, errors.Is(err, checkpoint.ErrUnsupportedVersion), "garbage is not a newer version")
		})
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	require.NoError(t, err)
	return b
}

func TestClone(t *testing.T) {
	cp := sample()
	c := cp.Clone()
	c.Inputs[stream.Partition{Topic: "orders", Partition: 3}] = 1
	c.Changelogs["sessions"] = 1
	require.Equal(t, sample(), cp, "changing a clone leaves the original alone")
}

func TestMemory(t *testing.T) {
	ctx := context.Background()
	m := checkpoint.NewMemory()
	defer func() { require.NoError(t, m.Close()) }()

	_, ok, err := m.Load(ctx, "task-0")
	require.NoError(t, err)
	require.False(t, ok)

	a1 := checkpoint.Checkpoint{ID: 1, Task: "task-0", Inputs: map[stream.Partition]int64{{Topic: "in"}: 10}}
	b1 := checkpoint.Checkpoint{ID: 1, Task: "task-1", Inputs: map[stream.Partition]int64{{Topic: "in", Partition: 1}: 3}}
	a2 := checkpoint.Checkpoint{ID: 2, Task: "task-0", Inputs: map[stream.Partition]int64{{Topic: "in"}: 20}}
	for _, c := range []checkpoint.Checkpoint{a1, b1, a2} {
		require.NoError(t, m.Write(ctx, c))
	}
	got, ok, err := m.Load(ctx, "task-0")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, a2, got, "the last write of a task wins")
	got, ok, err = m.Load(ctx, "task-1")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, b1, got)
	require.Equal(t, []checkpoint.Checkpoint{a1, b1, a2}, m.History())

	// The manager keeps its own copies.
	a2.Inputs[stream.Partition{Topic: "in"}] = -1
	got.Inputs[stream.Partition{Topic: "in", Partition: 1}] = -1
	m.History()[0].Inputs[stream.Partition{Topic: "in"}] = -1
	again, _, _ := m.Load(ctx, "task-0")
	require.EqualValues(t, 20, again.Inputs[stream.Partition{Topic: "in"}])
	again, _, _ = m.Load(ctx, "task-1")
	require.EqualValues(t, 3, again.Inputs[stream.Partition{Topic: "in", Partition: 1}])
	require.EqualValues(t, 10, m.History()[0].Inputs[stream.Partition{Topic: "in"}])
}

func TestMemoryConcurrentTasks(t *testing.T) {
	ctx := context.Background()
	m := checkpoint.NewMemory()
	const tasks, writes = 8, 50
	var wg sync.WaitGroup
	for i := range tasks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("task-%d", i)
			for id := uint64(1); id <= writes; id++ {
				if err := m.Write(ctx, checkpoint.Checkpoint{ID: id, Task: name}); err != nil {
					t.Error(err)
				}
				if _, _, err := m.Load(ctx, name); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	require.Len(t, m.History(), tasks*writes)
	for i := range tasks {
		c, ok, err := m.Load(ctx, fmt.Sprintf("task-%d", i))
		require.NoError(t, err)
		require.True(t, ok)
		require.EqualValues(t, writes, c.ID)
	}
}

// Both managers satisfy the interface the job uses.
var (
	_ checkpoint.Manager = (*checkpoint.Memory)(nil)
	_ checkpoint.Manager = (*checkpoint.Kafka)(nil)
)
