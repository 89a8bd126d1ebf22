package storage

import (
	"context"
	"io"
)

// Counted wraps s so that count is called once per request made through
// it, with the operation's name: put, put_if_absent, get, stat, list,
// delete. The daemon exports the counts (binvault_store_requests_total):
// object stores bill by the request. The optional interfaces of s
// (AfterLister, PrefixReader, Checker) stay available.
func Counted(s Store, count func(op string)) Store { return counted{s, count} }

type counted struct {
	Store
	count func(string)
}

func (c counted) Put(ctx context.Context, key string, r io.Reader) (ObjectInfo, error) {
	c.count("put")
	return c.Store.Put(ctx, key, r)
}

func (c counted) PutIfAbsent(ctx context.Context, key string, r io.Reader) (ObjectInfo, error) {
	c.count("put_if_absent")
	return c.Store.PutIfAbsent(ctx, key, r)
}

func (c counted) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	c.count("get")
	return c.Store.Get(ctx, key)
}

func (c counted) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	c.count("stat")
	return c.Store.Stat(ctx, key)
}

func (c counted) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	c.count("list")
	return c.Store.List(ctx, prefix, fn)
}

func (c counted) Delete(ctx context.Context, key string) error {
	c.count("delete")
	return c.Store.Delete(ctx, key)
}

func (c counted) ListAfter(ctx context.Context, prefix, startAfter string, fn func(ObjectInfo) error) error {
	c.count("list")
	return ListAfter(ctx, c.Store, prefix, startAfter, fn)
}

func (c counted) ReadPrefix(ctx context.Context, key string, n int64) ([]byte, error) {
	c.count("get")
	return ReadPrefix(ctx, c.Store, key, n)
}

func (c counted) Check(ctx context.Context) error {
	if ck, ok := c.Store.(Checker); ok {
		return ck.Check(ctx)
	}
	return nil
}
