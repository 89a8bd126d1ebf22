package retry

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestBackoffGrowsToTheCapAndResets(t *testing.T) {
	b := Policy{Initial: time.Millisecond, Max: 4 * time.Millisecond}.Start()
	var got []time.Duration
	for i := 0; i < 5; i++ {
		got = append(got, b.Next())
		if err := b.Wait(context.Background(), nil, ""); err != nil {
			t.Fatal(err)
		}
	}
	want := []time.Duration{1, 2, 4, 4, 4}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("delays %v, want %v ms", got, want)
		}
	}
	if b.Attempt() != 5 {
		t.Fatalf("attempt %d, want 5", b.Attempt())
	}
	b.Reset()
	if b.Attempt() != 0 || b.Next() != time.Millisecond {
		t.Fatalf("after Reset: attempt %d, next %v", b.Attempt(), b.Next())
	}
}

func TestBackoffJitterStaysWithinItsFraction(t *testing.T) {
	p := Policy{Initial: 20 * time.Millisecond, Max: 20 * time.Millisecond, Jitter: 0.5}
	for i := 0; i < 5; i++ {
		b := p.Start()
		start := time.Now()
		b.Wait(context.Background(), nil, "")
		if d := time.Since(start); d < 20*time.Millisecond || d > 200*time.Millisecond {
			t.Fatalf("slept %v for 20 ms with 50%% jitter", d)
		}
	}
}

func TestBackoffStopsWithTheContext(t *testing.T) {
	b := Policy{Initial: time.Hour}.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := b.Wait(ctx, nil, ""); err != context.DeadlineExceeded {
		t.Fatalf("Wait = %v, want DeadlineExceeded", err)
	}
	if time.Since(start) > time.Second {
		t.Fatal("Wait did not return when the context ended")
	}
}

func TestBackoffLogsTheAttempt(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	b := Policy{Initial: time.Millisecond}.Start()
	b.Wait(context.Background(), log, "upload failed; retrying", "segment", 7)
	b.Wait(context.Background(), log, "upload failed; retrying", "segment", 7)
	out := buf.String()
	for _, w := range []string{"segment=7 attempt=1 retry_in=1ms", "attempt=2 retry_in=2ms"} {
		if !strings.Contains(out, w) {
			t.Errorf("log lacks %q:\n%s", w, out)
		}
	}
}

func TestZeroPolicyIsTheDefault(t *testing.T) {
	if b := (Policy{}).Start(); b.Next() != DefaultInitial || b.p.Max != DefaultMax || b.p.Jitter != DefaultJitter {
		t.Fatalf("zero policy started as %+v", b.p)
	}
}
