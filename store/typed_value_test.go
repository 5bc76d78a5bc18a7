package store_test

import (
	"math"
	"testing"

	"github.com/grete-go/grete/store"
	"github.com/grete-go/grete/store/storetest"
	"github.com/stretchr/testify/require"
)

func TestIntegerValueSerdes(t *testing.T) {
	i64 := store.Int64Value()
	for _, v := range []int64{0, 1, -1, 300, -300, math.MaxInt64, math.MinInt64} {
		b, err := i64.Encode(v)
		require.NoError(t, err)
		got, err := i64.Decode(b)
		require.NoError(t, err)
		require.Equal(t, v, got)
	}
	u64 := store.Uint64Value()
	for _, v := range []uint64{0, 1, 127, 128, math.MaxUint64} {
		b, err := u64.Encode(v)
		require.NoError(t, err)
		got, err := u64.Decode(b)
		require.NoError(t, err)
		require.Equal(t, v, got)
	}
	b, _ := i64.Encode(5)
	require.Len(t, b, 1, "small values are one byte")
	for _, bad := range [][]byte{nil, {0x80}, {0x01, 0x02}} {
		_, err := i64.Decode(bad)
		require.Error(t, err, "%x", bad)
		_, err = u64.Decode(bad)
		require.Error(t, err, "%x", bad)
	}
	// As values of a typed store.
	s, h, err := storetest.Open("", store.Spec{Engine: store.Memory})
	require.NoError(t, err)
	defer h.Close()
	counts := store.NewTyped(s, store.Int64Key(), store.Int64Value())
	require.NoError(t, counts.Put(-7, 42))
	require.NoError(t, h.Commit())
	v, ok, err := counts.Get(-7)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, int64(42), v)
}

// A storetest store is a ChangeTracker exactly when its spec tracks
// changes, like a task's store.
func TestStoretestStoresAreChangeTrackersWhenTheyTrackChanges(t *testing.T) {
	for _, track := range []bool{false, true} {
		s, h, err := storetest.Open(t.TempDir(), store.Spec{TrackChanges: track})
		require.NoError(t, err)
		_, isTracker := s.(store.ChangeTracker)
		require.Equal(t, track, isTracker)
		_, counts := s.(store.RollbackCounter)
		require.True(t, counts)
		require.NoError(t, s.Put([]byte("k"), []byte("v")))
		require.NoError(t, h.Commit())
		require.NoError(t, h.Close())
	}
}
