package backup

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/binvault/binvault/storage"
	"github.com/binvault/binvault/storage/file"
)

// A manifest's recorded size is as untrusted as the object: a negative or
// huge one is refused before any allocation (a negative one used to panic
// in make), and an object longer than recorded is read no further than
// one byte past it.
func TestReadObjectBoundsBySizeNotByTrust(t *testing.T) {
	st, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	body := bytes.Repeat([]byte("INSERT INTO t VALUES (1);\n"), 1000)
	if _, err := st.Put(ctx, "backups/x/data/t.0000.sql.zst", bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	good := Object{Key: "backups/x/data/t.0000.sql.zst", StoredBytes: int64(len(body)), SHA256: sha256Hex(body)}
	if b, err := ReadObject(ctx, st, good); err != nil || !bytes.Equal(b, body) {
		t.Fatalf("the intact object: %v", err)
	}
	for _, c := range []struct {
		name string
		size int64
		want string
	}{
		{"negative", -1 << 20, "-1048576 stored bytes"},
		{"huge", 1 << 50, "stored bytes"},
		{"shorter than the object", 100, "bytes stored, the manifest records 100"},
		{"longer than the object", int64(len(body)) + 10, "the manifest records"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := good
			o.StoredBytes = c.size
			_, err := ReadObject(ctx, st, o)
			var ce *storage.ChecksumError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), o.Key) {
				t.Fatalf("err = %v, want a checksum error naming %s and %q", err, o.Key, c.want)
			}
		})
	}
}
