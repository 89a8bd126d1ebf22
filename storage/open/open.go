package open

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/binvault/binvault/storage"
	"github.com/binvault/binvault/storage/file"
	"github.com/binvault/binvault/storage/s3"
)

// Options mirror the storage section of the configuration.
type Options struct {
	URL       string // s3://bucket/prefix or file:///absolute/dir
	Endpoint  string // S3-compatible server, e.g. http://127.0.0.1:7070
	Region    string
	PathStyle bool
}

// Open returns the store the URL names. It sends no request; use
// storage.Checker for a preflight check.
func Open(ctx context.Context, o Options) (storage.Store, error) {
	u, err := url.Parse(o.URL)
	shown := o.URL
	if err == nil {
		shown = u.Redacted() // a password in the URL stays out of logs
	}
	bad := func(problem string) error {
		return fmt.Errorf("storage.url %q: %s", shown, problem)
	}
	if err != nil || o.URL == "" {
		return nil, bad("not a URL, use s3://bucket/prefix or file:///absolute/dir")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, bad("unexpected ?query or #fragment, use s3://bucket/prefix or file:///absolute/dir")
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" || !strings.HasPrefix(u.Path, "/") {
			return nil, bad("a file URL names an absolute directory with three slashes, e.g. file:///var/lib/binvault/archive")
		}
		if o.Endpoint != "" {
			return nil, fmt.Errorf("storage.endpoint %q: only applies to s3:// storage URLs", o.Endpoint)
		}
		return file.New(u.Path)
	case "s3":
		if u.User != nil {
			return nil, bad("must not carry credentials, use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile or an IAM role")
		}
		if n := len(u.Host); n < 3 || n > 63 {
			return nil, bad("a bucket name has 3 to 63 characters, as in s3://my-bucket/prefix")
		}
		if o.Endpoint != "" {
			e, err := url.Parse(o.Endpoint)
			if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" {
				return nil, fmt.Errorf("storage.endpoint %q: not an http(s) URL, use e.g. http://127.0.0.1:7070, or leave it out for AWS", o.Endpoint)
			}
		}
		return s3.New(ctx, s3.Config{Bucket: u.Host, Prefix: strings.Trim(u.Path, "/"),
			Endpoint: o.Endpoint, Region: o.Region, PathStyle: o.PathStyle})
	default:
		return nil, bad("unsupported scheme, use s3://bucket/prefix or file:///absolute/dir")
	}
}
