package s3_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	sdk "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/binvault/binvault/storage"
	"github.com/binvault/binvault/storage/s3"
	"github.com/binvault/binvault/storage/storagetest"
	"github.com/binvault/binvault/test/harness"
)

var prefixes atomic.Int64

// newStore returns a store under a prefix of its own on srv.
func newStore(t *testing.T, srv *harness.S3, tweak ...func(*s3.Config)) (*s3.Store, string) {
	t.Helper()
	prefix := fmt.Sprintf("t%d/archive", prefixes.Add(1))
	cfg := s3.Config{Bucket: srv.Bucket, Prefix: prefix, Endpoint: srv.Endpoint(), PathStyle: true,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey}
	for _, fn := range tweak {
		fn(&cfg)
	}
	s, err := s3.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, prefix
}

func TestConformance(t *testing.T) {
	srv := harness.StartS3(t)
	var mu sync.Mutex
	dirs := map[storage.Store]string{}
	storagetest.Run(t, func(t *testing.T) storage.Store {
		s, prefix := newStore(t, srv)
		mu.Lock()
		dirs[s] = filepath.Join(srv.Dir, srv.Bucket, prefix)
		mu.Unlock()
		return s
	}, storagetest.Corrupt(func(t *testing.T, s storage.Store, key string, edit func([]byte) []byte) {
		// versitygw's posix backend keeps each object as a plain file.
		mu.Lock()
		name := filepath.Join(dirs[s], key)
		mu.Unlock()
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, edit(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}))
	if up := pendingUploads(t, srv); len(up) != 0 {
		t.Errorf("failed uploads were not aborted: %q", up)
	}
}

// sdkClient talks to srv directly, to see what the Store does not show.
func sdkClient(srv *harness.S3) *sdk.Client {
	return sdk.New(sdk.Options{
		BaseEndpoint: aws.String(srv.Endpoint()), Region: "us-east-1", UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(srv.AccessKey, srv.SecretKey, ""),
	})
}

func pendingUploads(t *testing.T, srv *harness.S3) []string {
	t.Helper()
	out, err := sdkClient(srv).ListMultipartUploads(t.Context(), &sdk.ListMultipartUploadsInput{Bucket: &srv.Bucket})
	if err != nil {
		t.Fatalf("ListMultipartUploads: %v", err)
	}
	var keys []string
	for _, u := range out.Uploads {
		keys = append(keys, aws.ToString(u.Key))
	}
	return keys
}

// slowReader yields n bytes of content in small, paced reads and calls at
// once when it has yielded that many, so a test can act mid-upload.
type slowReader struct {
	r    io.Reader
	n    int64
	at   int64
	once func()
}

func (s *slowReader) Read(p []byte) (int, error) {
	time.Sleep(2 * time.Millisecond)
	n, err := s.r.Read(p[:min(len(p), 256<<10)])
	if s.n < s.at && s.n+int64(n) >= s.at {
		s.once()
	}
	s.n += int64(n)
	return n, err
}

func TestServerDiesMidUploadLeavesNothing(t *testing.T) {
	srv := harness.StartS3(t)
	s, _ := newStore(t, srv, func(c *s3.Config) { c.MaxAttempts, c.MaxBackoff = 2, 100*time.Millisecond })
	const size = 64 << 20
	r := &slowReader{r: storagetest.NewGen(size, 1), at: 24 << 20, once: srv.Kill}
	start := time.Now()
	_, err := s.Put(t.Context(), "seg/1", r)
	if err == nil {
		t.Fatal("Put succeeded although the server died midway")
	}
	t.Logf("Put failed after %v, %d MiB read: %v", time.Since(start).Round(time.Millisecond), r.n>>20, err)
	if !strings.Contains(err.Error(), "seg/1") {
		t.Errorf("error does not name the key: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(t.Context(), "seg/1"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("after restart, Stat: %v, want ErrNotFound", err)
	}
	var listed []string
	if err := s.List(t.Context(), "", func(i storage.ObjectInfo) error { listed = append(listed, i.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 0 {
		t.Fatalf("after restart, List shows %q", listed)
	}
	// The abort was sent while the server was down, so the parts stay on
	// the server (invisible) until a lifecycle rule removes them.
	t.Logf("multipart uploads left on the server: %q", pendingUploads(t, srv))
}

func TestServerRestartMidUploadIsRetried(t *testing.T) {
	srv := harness.StartS3(t)
	s, _ := newStore(t, srv)
	const size = 40 << 20
	restarted := make(chan error, 1)
	r := &slowReader{r: storagetest.NewGen(size, 2), at: 12 << 20, once: func() {
		srv.Kill()
		go func() { time.Sleep(500 * time.Millisecond); restarted <- srv.Start() }()
	}}
	info, err := s.Put(t.Context(), "seg/2", r)
	if err != nil {
		t.Fatalf("Put across a 0.5s server restart: %v", err)
	}
	if err := <-restarted; err != nil {
		t.Fatal(err)
	}
	got, err := storage.ReadAll(t.Context(), s, "seg/2")
	if err != nil || int64(len(got)) != size || storagetest.SHA256(got) != info.SHA256 {
		t.Fatalf("read back %d bytes, %v", len(got), err)
	}
	if up := pendingUploads(t, srv); len(up) != 0 {
		t.Errorf("multipart uploads left: %q", up)
	}
}

func TestServerRestartMidDownloadResumes(t *testing.T) {
	srv := harness.StartS3(t)
	s, _ := newStore(t, srv)
	const size = 48 << 20
	info, err := s.Put(t.Context(), "seg/3", storagetest.NewGen(size, 3))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := s.Get(t.Context(), "seg/3")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, rc, 4<<20); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	restarted := make(chan error, 1)
	go func() { time.Sleep(300 * time.Millisecond); restarted <- srv.Start() }()
	n, err := io.Copy(h, rc)
	if err != nil {
		t.Fatalf("reading across a server restart, after %d more bytes: %v", n, err)
	}
	if err := <-restarted; err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != info.SHA256 || n+4<<20 != size {
		t.Fatalf("read %d bytes with SHA-256 %s, want %d, %s", n+4<<20, got, size, info.SHA256)
	}
}

func TestWrongCredentials(t *testing.T) {
	srv := harness.StartS3(t)
	for _, c := range []struct{ name, access, secret string }{
		{"wrong secret", srv.AccessKey, "not-the-secret-8d1f"},
		{"unknown key id", "nosuchaccesskey", srv.SecretKey},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, _ := newStore(t, srv, func(cfg *s3.Config) { cfg.AccessKey, cfg.SecretKey = c.access, c.secret })
			_, putErr := s.Put(t.Context(), "k", strings.NewReader("x"))
			_, statErr := s.Stat(t.Context(), "k")
			_, getErr := s.Get(t.Context(), "k")
			listErr := s.List(t.Context(), "", func(storage.ObjectInfo) error { return nil })
			for op, err := range map[string]error{"Check": s.Check(t.Context()), "Put": putErr, "Stat": statErr, "Get": getErr, "List": listErr} {
				var ce *storage.ConfigError
				if !errors.As(err, &ce) || !strings.Contains(err.Error(), "access denied") ||
					!strings.Contains(err.Error(), "AWS_SECRET_ACCESS_KEY") || !strings.Contains(err.Error(), srv.Bucket) {
					t.Errorf("%s: %v; want a *storage.ConfigError naming the bucket and the fix", op, err)
				}
				if errors.Is(err, storage.ErrNotFound) {
					t.Errorf("%s: %v must not read as a missing object", op, err)
				}
				for _, secret := range []string{c.secret, srv.SecretKey} {
					if strings.Contains(fmt.Sprintf("%v %+v %#v", err, err, err), secret) {
						t.Errorf("%s: the error shows a secret key: %v", op, err)
					}
				}
			}
			t.Logf("Check: %v", s.Check(t.Context()))
		})
	}
}

func TestMissingBucket(t *testing.T) {
	srv := harness.StartS3(t)
	s, _ := newStore(t, srv, func(c *s3.Config) { c.Bucket = "no-such-bucket" })
	_, putErr := s.Put(t.Context(), "k", strings.NewReader("x"))
	_, statErr := s.Stat(t.Context(), "k")
	_, getErr := s.Get(t.Context(), "k")
	listErr := s.List(t.Context(), "", func(storage.ObjectInfo) error { return nil })
	for op, err := range map[string]error{"Check": s.Check(t.Context()), "Put": putErr, "Stat": statErr, "Get": getErr, "List": listErr, "Delete": s.Delete(t.Context(), "k")} {
		var ce *storage.ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), `"no-such-bucket"`) || !strings.Contains(err.Error(), "no such bucket") {
			t.Errorf("%s: %v; want a *storage.ConfigError naming the bucket", op, err)
		}
		if errors.Is(err, storage.ErrNotFound) {
			t.Errorf("%s: %v must not read as a missing object", op, err)
		}
	}
	t.Logf("Check: %v", s.Check(t.Context()))
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, c := range []s3.Config{{Bucket: "ab"}, {Bucket: strings.Repeat("b", 64)}, {Bucket: "bucket", Prefix: "a b"}, {Bucket: "bucket", Prefix: "a/../b"}} {
		if _, err := s3.New(t.Context(), c); err == nil {
			t.Errorf("New(%+v) succeeded", c)
		}
	}
}
