package open_test

import (
	"strings"
	"testing"

	"github.com/binvault/binvault/storage"
	"github.com/binvault/binvault/storage/file"
	"github.com/binvault/binvault/storage/open"
	"github.com/binvault/binvault/test/harness"
)

func TestBadURLsNameTheURLAndTheFix(t *testing.T) {
	for _, c := range []struct {
		o    open.Options
		want []string
	}{
		{open.Options{URL: "ftp://x"}, []string{`storage.url "ftp://x"`, "unsupported scheme", "s3://bucket/prefix", "file:///absolute/dir"}},
		{open.Options{URL: ""}, []string{"storage.url", "s3://bucket/prefix"}},
		{open.Options{URL: "/var/archive"}, []string{"unsupported scheme", "file:///absolute/dir"}},
		{open.Options{URL: "file://archive"}, []string{`"file://archive"`, "three slashes"}},
		{open.Options{URL: "file:relative"}, []string{"three slashes"}},
		{open.Options{URL: "file:///a", Endpoint: "http://x"}, []string{"storage.endpoint", "only applies to s3://"}},
		{open.Options{URL: "s3://ab/p"}, []string{`"s3://ab/p"`, "3 to 63"}},
		{open.Options{URL: "s3://key:s3cr3tval@bucket/p"}, []string{"must not carry credentials", "AWS_ACCESS_KEY_ID"}},
		{open.Options{URL: "s3://bucket/p", Endpoint: "127.0.0.1:7070"}, []string{`storage.endpoint "127.0.0.1:7070"`, "http://"}},
		{open.Options{URL: "s3://bucket/a b"}, []string{"prefix", "printable ASCII"}},
		{open.Options{URL: "s3://bucket/p?x=1"}, []string{"query"}},
	} {
		st, err := open.Open(t.Context(), c.o)
		if err == nil {
			t.Errorf("Open(%+v) = %v, want an error", c.o, st)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Open(%+v): %q does not mention %q", c.o, err, w)
			}
		}
		if strings.Contains(err.Error(), "s3cr3tval") {
			t.Errorf("Open(%+v): error shows the URL's secret: %q", c.o, err)
		}
	}
}

func TestFileURL(t *testing.T) {
	dir := t.TempDir()
	st, err := open.Open(t.Context(), open.Options{URL: "file://" + dir})
	if err != nil {
		t.Fatal(err)
	}
	if fs, ok := st.(*file.Store); !ok || fs.Dir() != dir || st.String() != "file://"+dir {
		t.Fatalf("Open(file://%s) = %T %v", dir, st, st)
	}
	if err := st.(storage.Checker).Check(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// The default credential chain, as the daemon uses it: environment variables.
func TestS3URLWithEnvironmentCredentials(t *testing.T) {
	srv := harness.StartS3(t)
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	st, err := open.Open(t.Context(), open.Options{URL: srv.URL("prod/db1"), Endpoint: srv.Endpoint(), PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	if st.String() != "s3://"+srv.Bucket+"/prod/db1" {
		t.Errorf("String() = %s", st)
	}
	if err := st.(storage.Checker).Check(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(t.Context(), "seg/1", strings.NewReader("hello")); err != nil {
		t.Fatal(err)
	}
	if got, err := storage.ReadAll(t.Context(), st, "seg/1"); err != nil || string(got) != "hello" {
		t.Fatalf("read back %q, %v", got, err)
	}

	t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-3c9a")
	st, err = open.Open(t.Context(), open.Options{URL: srv.URL("prod/db1"), Endpoint: srv.Endpoint(), PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	err = st.(storage.Checker).Check(t.Context())
	if err == nil || !strings.Contains(err.Error(), "AWS_SECRET_ACCESS_KEY") || strings.Contains(err.Error(), "wrong-secret-3c9a") {
		t.Fatalf("Check with a wrong secret: %v", err)
	}
}
