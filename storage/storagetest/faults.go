package storagetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/binvault/binvault/storage"
)

// Faults wraps a Store and injects, by rule, the failures a remote store
// shows: refused requests (Fail), replies lost after the store committed
// the write (LoseReply) and slow requests (Delay). Without rules it passes
// every call through unchanged. It counts the calls per operation for
// assertions. Safe for concurrent use.
//
//	st := storagetest.NewFaults(inner)
//	end := st.Outage()                                        // every call fails until end()
//	st.FailNth(storagetest.OpPutIfAbsent, "segments/", 2)      // the 2nd such call fails
//	st.LoseReplyNth(storagetest.OpPutIfAbsent, "", 1)          // stored, but the caller sees an error
//	st.Calls(storagetest.OpGet)                                // Gets so far
type Faults struct {
	inner storage.Store

	mu      sync.Mutex
	rules   []*ruleState
	calls   [opCount]int
	faults  [opCount]int // Fail and LoseReply acts
	history []Call
	rnd     *rand.Rand
}

var _ storage.Store = (*Faults)(nil)
var _ storage.AfterLister = (*Faults)(nil)
var _ storage.PrefixReader = (*Faults)(nil)

// Op names a Store method.
type Op uint8

// The operations; OpAny matches every one in a Rule and sums them in Calls.
const (
	OpAny Op = iota
	OpPut
	OpPutIfAbsent
	OpGet // Get and ReadPrefix
	OpStat
	OpList // List and ListAfter
	OpDelete
	opCount
)

func (o Op) String() string {
	switch o {
	case OpAny:
		return "any"
	case OpPut:
		return "put"
	case OpPutIfAbsent:
		return "put_if_absent"
	case OpGet:
		return "get"
	case OpStat:
		return "stat"
	case OpList:
		return "list"
	case OpDelete:
		return "delete"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Action is what a Rule does to a call it acts on.
type Action uint8

const (
	// Fail returns an error without calling the inner store: a request
	// refused or lost on the way there (the object is unchanged).
	Fail Action = iota
	// LoseReply calls the inner store, then returns an error in place of
	// its reply: the store committed, the caller cannot know. (A retried
	// PutIfAbsent then meets ErrExists; a Get's reader is closed unread.)
	// A call the inner store itself fails returns that error.
	LoseReply
	// Delay waits Rule.Delay, or until the call's ctx ends, then calls the
	// inner store.
	Delay
)

func (a Action) String() string {
	switch a {
	case Fail:
		return "fail"
	case LoseReply:
		return "lose_reply"
	case Delay:
		return "delay"
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// Rule selects calls and says what to do to them. A rule counts every call
// that matches its Op and Prefix, whether or not it acts on it, so Nth
// means the same with other rules present.
type Rule struct {
	Op Op // OpAny: every operation
	// Prefix keeps the rule to keys that start with it ("": every key). A
	// List matches when the keys it walks may start with Prefix: its own
	// prefix extends Prefix or is a prefix of it.
	Prefix string
	// Nth is the first matching call the rule acts on, counting from 1
	// (0 also means the first). Count is how many matching calls from
	// there it acts on; 0: every one until the rule is removed.
	Nth, Count int
	// Prob, when above 0, makes the rule act on each call in that range
	// only with this probability (see Faults.Seed).
	Prob   float64
	Action Action
	Delay  time.Duration // for Delay
	// Err is what Fail and LoseReply return; nil: a *FaultError, which
	// wraps ErrInjected and which callers must take as transient.
	Err error
	// Then, when set, is called each time the rule acts, after the inner
	// call for LoseReply and Delay, before returning for Fail: for example
	// to cancel the caller's ctx, as a crash at that point would.
	Then func()
}

// ErrInjected is wrapped by the errors Faults makes up.
var ErrInjected = errors.New("injected store fault")

// FaultError is a made-up failure of one call.
type FaultError struct {
	Op   Op
	Key  string // the key, or the List prefix
	Lost bool   // LoseReply: the store did what was asked
}

func (e *FaultError) Error() string {
	if e.Lost {
		return fmt.Sprintf("%s %s: %v: the reply was lost (the store committed the request)", e.Op, e.Key, ErrInjected)
	}
	return fmt.Sprintf("%s %s: %v: store unreachable", e.Op, e.Key, ErrInjected)
}

func (e *FaultError) Unwrap() error { return ErrInjected }

// Call is one call as Faults saw it.
type Call struct {
	Op    Op
	Key   string // the key, or the List prefix
	Fault string // "" (passed through), or the action taken: "fail", "lose_reply", "delay"
}

func (c Call) String() string {
	if c.Fault == "" {
		return fmt.Sprintf("%s %s", c.Op, c.Key)
	}
	return fmt.Sprintf("%s %s [%s]", c.Op, c.Key, c.Fault)
}

type ruleState struct {
	Rule
	seen    int
	removed bool
}

// NewFaults wraps inner; with no rules it changes nothing.
func NewFaults(inner storage.Store) *Faults {
	return &Faults{inner: inner, rnd: rand.New(rand.NewPCG(1, 2))}
}

// Inner is the wrapped store, to look at it without faults or counting.
func (f *Faults) Inner() storage.Store { return f.inner }

func (f *Faults) String() string { return "faults(" + f.inner.String() + ")" }

// Seed reseeds the source behind Rule.Prob, for a reproducible run.
func (f *Faults) Seed(seed uint64) {
	f.mu.Lock()
	f.rnd = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	f.mu.Unlock()
}

// Inject adds a rule; remove takes it away (calls already matched keep
// what it did to them).
func (f *Faults) Inject(r Rule) (remove func()) {
	rs := &ruleState{Rule: r}
	if rs.Nth < 1 {
		rs.Nth = 1
	}
	f.mu.Lock()
	f.rules = append(f.rules, rs)
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		rs.removed = true
		for i, x := range f.rules {
			if x == rs {
				f.rules = append(f.rules[:i], f.rules[i+1:]...)
				break
			}
		}
	}
}

// FailNth fails the n-th call of op on keys with prefix from now on.
func (f *Faults) FailNth(op Op, prefix string, n int) (remove func()) {
	return f.Inject(Rule{Op: op, Prefix: prefix, Nth: n, Count: 1, Action: Fail})
}

// LoseReplyNth performs the n-th call of op on keys with prefix from now
// on, then returns an error as if the reply were lost.
func (f *Faults) LoseReplyNth(op Op, prefix string, n int) (remove func()) {
	return f.Inject(Rule{Op: op, Prefix: prefix, Nth: n, Count: 1, Action: LoseReply})
}

// Outage fails every call until end is called.
func (f *Faults) Outage() (end func()) {
	return f.Inject(Rule{Action: Fail})
}

// Slow delays every call of op on keys with prefix by d until end is called.
func (f *Faults) Slow(op Op, prefix string, d time.Duration) (end func()) {
	return f.Inject(Rule{Op: op, Prefix: prefix, Action: Delay, Delay: d})
}

// Clear removes every rule; counters and history stay.
func (f *Faults) Clear() {
	f.mu.Lock()
	for _, r := range f.rules {
		r.removed = true
	}
	f.rules = nil
	f.mu.Unlock()
}

// Calls is how many calls of op were made (OpAny: of all operations),
// faulted or not.
func (f *Faults) Calls(op Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return sum(f.calls, op)
}

// Faulted is how many calls of op (OpAny: of all) failed by a rule: Fail
// and LoseReply, not Delay.
func (f *Faults) Faulted(op Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return sum(f.faults, op)
}

func sum(n [opCount]int, op Op) int {
	if op != OpAny {
		return n[op]
	}
	t := 0
	for _, c := range n {
		t += c
	}
	return t
}

// History is every call so far, in the order they arrived.
func (f *Faults) History() []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Call(nil), f.history...)
}

// decision is what the rules say about one call.
type decision struct {
	delay  time.Duration
	action *ruleState // the first Fail or LoseReply rule acting, if any
	thens  []func()   // Then of the Delay rules acting
}

// decide counts the call and asks every rule.
func (f *Faults) decide(op Op, key string) decision {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op]++
	var d decision
	fault := ""
	for _, r := range f.rules {
		if !r.matches(op, key) {
			continue
		}
		r.seen++
		if r.seen < r.Nth || (r.Count > 0 && r.seen >= r.Nth+r.Count) {
			continue
		}
		if r.Prob > 0 && f.rnd.Float64() >= r.Prob {
			continue
		}
		switch {
		case r.Action == Delay:
			d.delay += r.Delay
			if r.Then != nil {
				d.thens = append(d.thens, r.Then)
			}
			if fault == "" {
				fault = Delay.String()
			}
		case d.action == nil:
			d.action = r
			fault = r.Action.String()
		}
	}
	if d.action != nil {
		f.faults[op]++
	}
	f.history = append(f.history, Call{Op: op, Key: key, Fault: fault})
	return d
}

func (r *ruleState) matches(op Op, key string) bool {
	if r.removed || (r.Op != OpAny && r.Op != op) {
		return false
	}
	if op == OpList {
		return strings.HasPrefix(key, r.Prefix) || strings.HasPrefix(r.Prefix, key)
	}
	return strings.HasPrefix(key, r.Prefix)
}

// do runs one call under the rules. call makes the inner store's call;
// lost says its reply will not reach the caller, who must then not see
// (or be left holding) what it returns.
func (f *Faults) do(ctx context.Context, op Op, key string, call func(lost bool) error) error {
	d := f.decide(op, key)
	if d.delay > 0 {
		t := time.NewTimer(d.delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
	for _, then := range d.thens {
		then()
	}
	r := d.action
	if r == nil {
		return call(false)
	}
	fe := r.Err
	if fe == nil {
		fe = &FaultError{Op: op, Key: key, Lost: r.Action == LoseReply}
	}
	if r.Action == LoseReply {
		if err := call(true); err != nil {
			return err
		}
	}
	if r.Then != nil {
		r.Then()
	}
	return fe
}

func (f *Faults) Put(ctx context.Context, key string, r io.Reader) (storage.ObjectInfo, error) {
	var info storage.ObjectInfo
	err := f.do(ctx, OpPut, key, func(bool) (err error) {
		info, err = f.inner.Put(ctx, key, r)
		return err
	})
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	return info, nil
}

func (f *Faults) PutIfAbsent(ctx context.Context, key string, r io.Reader) (storage.ObjectInfo, error) {
	var info storage.ObjectInfo
	err := f.do(ctx, OpPutIfAbsent, key, func(bool) (err error) {
		info, err = f.inner.PutIfAbsent(ctx, key, r)
		return err
	})
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	return info, nil
}

func (f *Faults) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	var rc io.ReadCloser
	err := f.do(ctx, OpGet, key, func(lost bool) (err error) {
		rc, err = f.inner.Get(ctx, key)
		if lost && err == nil {
			rc.Close() // the caller never gets the body
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return rc, nil
}

// ReadPrefix reads the start of an object's content through the inner
// store's ranged read when it has one, otherwise through Get; either way
// it counts, and can fail, as OpGet.
func (f *Faults) ReadPrefix(ctx context.Context, key string, n int64) ([]byte, error) {
	var b []byte
	err := f.do(ctx, OpGet, key, func(bool) (err error) {
		if pr, ok := f.inner.(storage.PrefixReader); ok {
			b, err = pr.ReadPrefix(ctx, key, n)
			return err
		}
		rc, err := f.inner.Get(ctx, key)
		if err != nil {
			return err
		}
		defer rc.Close()
		b = make([]byte, max(n, 0))
		m, err := io.ReadFull(rc, b)
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			err = nil
		}
		b = b[:m]
		return err
	})
	if err != nil {
		return nil, err
	}
	return b, nil
}

func (f *Faults) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	var info storage.ObjectInfo
	err := f.do(ctx, OpStat, key, func(bool) (err error) {
		info, err = f.inner.Stat(ctx, key)
		return err
	})
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	return info, nil
}

// List passes the inner listing through; a lost reply walks the listing
// without showing it to fn.
func (f *Faults) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	return f.list(ctx, prefix, "", fn)
}

// ListAfter is List from a key on, through the inner store's ListAfter
// when it has one; it counts as OpList.
func (f *Faults) ListAfter(ctx context.Context, prefix, startAfter string, fn func(storage.ObjectInfo) error) error {
	return f.list(ctx, prefix, startAfter, fn)
}

func (f *Faults) list(ctx context.Context, prefix, startAfter string, fn func(storage.ObjectInfo) error) error {
	return f.do(ctx, OpList, prefix, func(lost bool) error {
		call := fn
		if lost {
			call = func(storage.ObjectInfo) error { return nil }
		}
		if startAfter == "" {
			return f.inner.List(ctx, prefix, call)
		}
		return storage.ListAfter(ctx, f.inner, prefix, startAfter, call)
	})
}

func (f *Faults) Delete(ctx context.Context, key string) error {
	return f.do(ctx, OpDelete, key, func(bool) error { return f.inner.Delete(ctx, key) })
}
