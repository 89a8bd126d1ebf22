package work

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

func TestEachRunsEveryJobOncePerWorker(t *testing.T) {
	var mu sync.Mutex
	seen := map[int]int{}
	busy := make([]atomic.Int32, 3)
	err := Each(context.Background(), 3, 50, func(_ context.Context, w, i int) error {
		if busy[w].Add(1) != 1 {
			t.Errorf("worker %d runs two jobs at once", w)
		}
		defer busy[w].Add(-1)
		mu.Lock()
		seen[i]++
		mu.Unlock()
		return nil
	})
	if err != nil || len(seen) != 50 {
		t.Fatalf("err %v, %d jobs run", err, len(seen))
	}
	for i, n := range seen {
		if n != 1 {
			t.Errorf("job %d ran %d times", i, n)
		}
	}
}

func TestEachStopsAtTheFirstError(t *testing.T) {
	boom := errors.New("boom")
	var ran atomic.Int32
	err := Each(context.Background(), 2, 100, func(ctx context.Context, _, i int) error {
		ran.Add(1)
		if i == 3 {
			return boom
		}
		return ctx.Err()
	})
	if !errors.Is(err, boom) || ran.Load() >= 100 {
		t.Fatalf("err %v after %d jobs", err, ran.Load())
	}
}
