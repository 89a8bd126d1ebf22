package storage

import "context"

// AfterLister is implemented by stores that can start a listing after a
// key server-side (S3's StartAfter), so reading the newest keys of a long
// prefix costs one request instead of a walk over all of them.
type AfterLister interface {
	ListAfter(ctx context.Context, prefix, startAfter string, fn func(ObjectInfo) error) error
}

// ListAfter calls fn for the keys with prefix that sort after startAfter,
// in key order.
func ListAfter(ctx context.Context, s Store, prefix, startAfter string, fn func(ObjectInfo) error) error {
	if al, ok := s.(AfterLister); ok {
		return al.ListAfter(ctx, prefix, startAfter, fn)
	}
	return s.List(ctx, prefix, func(oi ObjectInfo) error {
		if oi.Key <= startAfter {
			return nil
		}
		return fn(oi)
	})
}
