package retry

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Defaults: the first retry after a second, at most every 30 s; the jitter
// spreads reconnects of many daemons after a primary or store outage.
const (
	DefaultInitial = time.Second
	DefaultMax     = 30 * time.Second
	DefaultJitter  = 0.25
)

// Policy is how delays grow.
type Policy struct {
	Initial time.Duration // first delay
	Max     time.Duration // cap
	// Jitter adds up to this fraction of the delay, at random.
	Jitter float64
}

// Default is the policy every retry loop uses unless a test shortens it.
var Default = Policy{Initial: DefaultInitial, Max: DefaultMax, Jitter: DefaultJitter}

func (p Policy) orDefault() Policy {
	if p.Initial <= 0 {
		p.Initial = DefaultInitial
	}
	if p.Max < p.Initial {
		p.Max = max(p.Initial, DefaultMax)
	}
	if p.Jitter < 0 {
		p.Jitter = 0
	}
	return p
}

// Backoff is one retry loop's state.
type Backoff struct {
	p       Policy
	next    time.Duration
	attempt int
}

// Start begins a retry loop; a zero Policy means Default.
func (p Policy) Start() *Backoff {
	if p == (Policy{}) {
		p = Default
	}
	p = p.orDefault()
	return &Backoff{p: p, next: p.Initial}
}

// Attempt is how many times Wait has been called since Start or Reset:
// the number of failures so far.
func (b *Backoff) Attempt() int { return b.attempt }

// Next is the delay the next Wait sleeps, before jitter.
func (b *Backoff) Next() time.Duration { return b.next }

// Reset starts over at the initial delay, after something worked.
func (b *Backoff) Reset() { b.next, b.attempt = b.p.Initial, 0 }

// Wait logs msg at Warn level with args, the attempt number and the delay,
// then sleeps that delay (plus jitter) and doubles it up to the cap. It
// returns ctx.Err() as soon as ctx ends. A nil log logs nothing.
func (b *Backoff) Wait(ctx context.Context, log *slog.Logger, msg string, args ...any) error {
	b.attempt++
	d := b.next
	if b.p.Jitter > 0 {
		d += rand.N(time.Duration(float64(d)*b.p.Jitter) + 1)
	}
	if log != nil {
		log.Warn(msg, append(args, "attempt", b.attempt, "retry_in", d.Round(time.Millisecond).String())...)
	}
	b.next = min(b.next*2, b.p.Max)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
