package storage

import (
	"context"
	"errors"
	"io"
)

// PrefixReader is implemented by stores that can read the start of an
// object's content with one ranged request, without transferring the rest.
type PrefixReader interface {
	ReadPrefix(ctx context.Context, key string, n int64) ([]byte, error)
}

// ReadPrefix returns the first n bytes of key's content, or all of it when
// it is shorter. The bytes are not checked against the object's digest
// (that takes a full read): a caller that relies on them checks them
// itself, as the archive's segment header does with its own SHA-256.
func ReadPrefix(ctx context.Context, s Store, key string, n int64) ([]byte, error) {
	if pr, ok := s.(PrefixReader); ok {
		return pr.ReadPrefix(ctx, key, n)
	}
	rc, err := s.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b := make([]byte, n)
	m, err := io.ReadFull(rc, b)
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		err = nil
	}
	return b[:m], err
}
