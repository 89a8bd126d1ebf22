package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/binvault/binvault/storage"
)

// Config locates the bucket. Credentials come from the standard AWS chain
// (environment, shared profiles, web identity, instance roles).
type Config struct {
	Bucket    string
	Prefix    string // keys are stored as Prefix/key
	Endpoint  string // e.g. http://127.0.0.1:7070; empty for AWS
	Region    string // default: the AWS chain's, else us-east-1
	PathStyle bool   // bucket in the path, as most S3-compatible servers want

	// AccessKey and SecretKey, when set, replace the credential chain
	// (tests use them to run servers with different keys side by side).
	AccessKey, SecretKey string

	// MaxAttempts and MaxBackoff bound the retries of each request on 5xx
	// and network errors. Defaults: 8 attempts, 5s.
	MaxAttempts int
	MaxBackoff  time.Duration
}

// Uploads stream in parts of partSize, at most concurrency in flight. The
// transfer manager holds concurrency+1 part buffers plus the first part, so
// an upload of any size needs about 32 MiB.
const (
	partSize    = 8 << 20
	concurrency = 2
)

// Store is a storage.Store over an S3 bucket.
type Store struct {
	cfg      Config
	prefix   string // "" or Prefix + "/"
	client   *s3.Client
	uploader *transfermanager.Client
}

var (
	_ storage.Store       = (*Store)(nil)
	_ storage.AfterLister = (*Store)(nil)
)
var _ storage.Checker = (*Store)(nil)

// New configures a client; it sends no request (see Check).
func New(ctx context.Context, cfg Config) (*Store, error) {
	if n := len(cfg.Bucket); n < 3 || n > 63 {
		return nil, fmt.Errorf("s3 bucket %q: a bucket name has 3 to 63 characters, as in s3://my-bucket/prefix", cfg.Bucket)
	}
	prefix := strings.Trim(cfg.Prefix, "/")
	if prefix != "" && storage.ValidateKey(prefix) != nil {
		return nil, fmt.Errorf("s3 prefix %q: use slash-separated names of printable ASCII, as in s3://my-bucket/binvault/prod", cfg.Prefix)
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 8
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	opts := []func(*config.LoadOptions) error{
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = cfg.MaxAttempts
				o.MaxBackoff = cfg.MaxBackoff
				o.BaseDelay = 250 * time.Millisecond
				// The default retry quota, shared by all requests, runs dry
				// in a long outage and then fails requests without trying;
				// a daemon with two uploads in flight needs no such brake.
				o.RateLimiter = ratelimit.None
			})
		}),
	}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if cfg.AccessKey != "" {
		opts = append(opts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, "")))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("s3 bucket %q: load AWS configuration: %w", cfg.Bucket, err)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = "us-east-1"
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
		// Every object carries its own SHA-256, verified on read; the SDK's
		// default CRC32 request checksums break older S3-compatible servers.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	s := &Store{cfg: cfg, client: client}
	if prefix != "" {
		s.prefix = prefix + "/"
	}
	s.uploader = transfermanager.New(client, func(o *transfermanager.Options) {
		o.PartSizeBytes = partSize
		// The first part is read whole before deciding between one PUT and
		// a multipart upload: keep that buffer at one part too.
		o.MultipartUploadThreshold = partSize
		o.Concurrency = concurrency
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		// Abort a failed multipart upload even when ctx has ended, so its
		// parts don't linger on the server.
		o.FailTimeout = 30 * time.Second
	})
	return s, nil
}

func (s *Store) String() string {
	return strings.TrimSuffix("s3://"+s.cfg.Bucket+"/"+s.prefix, "/")
}

// Check lists at most one key: one cheap request that proves the endpoint,
// the credentials and the bucket.
func (s *Store) Check(ctx context.Context) error {
	_, err := s.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{
		Bucket: &s.cfg.Bucket, Prefix: aws.String(s.prefix), MaxKeys: aws.Int32(1)})
	if err != nil {
		return s.fail("check", s.String(), err)
	}
	return nil
}

func (s *Store) Put(ctx context.Context, key string, r io.Reader) (storage.ObjectInfo, error) {
	return s.put(ctx, key, r, false)
}

// PutIfAbsent sends If-None-Match: *, which the transfer manager passes on
// PutObject and on CompleteMultipartUpload, so the server checks for an
// existing object at the moment the new one would appear.
func (s *Store) PutIfAbsent(ctx context.Context, key string, r io.Reader) (storage.ObjectInfo, error) {
	return s.put(ctx, key, r, true)
}

func (s *Store) put(ctx context.Context, key string, r io.Reader, ifAbsent bool) (storage.ObjectInfo, error) {
	if err := storage.ValidateKey(key); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("put: %w", err)
	}
	fr := storage.Frame(r)
	in := &transfermanager.UploadObjectInput{Bucket: &s.cfg.Bucket, Key: aws.String(s.prefix + key), Body: fr}
	if ifAbsent {
		in.IfNoneMatch = aws.String("*")
	}
	// A failed multipart upload is aborted by the transfer manager; S3 never
	// shows an object before CompleteMultipartUpload.
	if _, err := s.uploader.UploadObject(ctx, in); err != nil {
		if ifAbsent && isConflict(err) {
			return storage.ObjectInfo{}, fmt.Errorf("put %s: %w", key, storage.ErrExists)
		}
		return storage.ObjectInfo{}, s.fail("put", key, err)
	}
	if !fr.Done() {
		return storage.ObjectInfo{}, fmt.Errorf("put %s: upload ended before the content did", key)
	}
	return fr.Info(key), nil
}

// isConflict recognises a lost If-None-Match race: 412 when the object was
// there, 409 when another conditional write to the key was in progress. Not
// any 409: versitygw answers ObjectParentIsFile with one.
func isConflict(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode() == "PreconditionFailed" || ae.ErrorCode() == "ConditionalRequestConflict"
	}
	return httpStatus(err) == 412
}

func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := storage.ValidateKey(key); err != nil {
		return nil, fmt.Errorf("get: %w", err)
	}
	g := &getReader{ctx: ctx, s: s, key: key}
	if err := g.open(); err != nil {
		return nil, err
	}
	return storage.Unframe(key, g), nil
}

// ReadPrefix reads the first n bytes of the content with one ranged GET.
func (s *Store) ReadPrefix(ctx context.Context, key string, n int64) ([]byte, error) {
	if err := storage.ValidateKey(key); err != nil {
		return nil, fmt.Errorf("get: %w", err)
	}
	if n <= 0 {
		return nil, nil
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.cfg.Bucket, Key: aws.String(s.prefix + key),
		Range: aws.String(fmt.Sprintf("bytes=0-%d", n+storage.TrailerSize-1))})
	if err != nil {
		return nil, s.fail("get", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(io.LimitReader(out.Body, n+storage.TrailerSize))
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	// The range may reach into the trailer: the object's total size, from
	// Content-Range ("bytes 0-99/1234"), says where the content ends.
	total := int64(-1)
	if cr := aws.ToString(out.ContentRange); cr != "" {
		if i := strings.LastIndexByte(cr, '/'); i >= 0 {
			total, _ = strconv.ParseInt(cr[i+1:], 10, 64)
		}
	} else if int64(len(b)) < n+storage.TrailerSize {
		total = int64(len(b)) // the whole object came back
	}
	if total >= 0 {
		content := total - storage.TrailerSize
		if content < 0 {
			return nil, &storage.ChecksumError{Key: key, Reason: "shorter than its checksum trailer"}
		}
		if int64(len(b)) > content {
			b = b[:content]
		}
	}
	if int64(len(b)) > n {
		b = b[:n]
	}
	return b, nil
}

// getReader resumes a download whose connection broke, from the offset
// reached and only while the object is unchanged (If-Match on its ETag), so
// a long restore survives what a single request's retries would.
type getReader struct {
	ctx     context.Context
	s       *Store
	key     string
	etag    *string
	body    io.ReadCloser
	off     int64
	resumed int
}

func (g *getReader) open() error {
	in := &s3.GetObjectInput{Bucket: &g.s.cfg.Bucket, Key: aws.String(g.s.prefix + g.key), IfMatch: g.etag}
	if g.off > 0 {
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", g.off))
	}
	out, err := g.s.client.GetObject(g.ctx, in)
	if err != nil {
		return g.s.fail("get", g.key, err)
	}
	g.body, g.etag = out.Body, out.ETag
	return nil
}

func (g *getReader) Read(p []byte) (int, error) {
	for {
		n, err := g.body.Read(p)
		g.off += int64(n)
		if err == nil || err == io.EOF || g.ctx.Err() != nil || g.resumed >= g.s.cfg.MaxAttempts {
			return n, err
		}
		g.body.Close()
		g.resumed++
		if oerr := g.open(); oerr != nil {
			g.body = io.NopCloser(strings.NewReader(""))
			return n, fmt.Errorf("resume after %v: %w", err, oerr)
		}
		if n > 0 {
			return n, nil
		}
	}
}

func (g *getReader) Close() error { return g.body.Close() }

// Stat reads the trailer with one suffix-range GET: the response carries the
// total size too, and both come from the same version of the object, which a
// HEAD followed by a GET could not promise.
func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	if err := storage.ValidateKey(key); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("stat: %w", err)
	}
	short := &storage.ChecksumError{Key: key, Reason: "shorter than its checksum trailer"}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.cfg.Bucket, Key: aws.String(s.prefix + key),
		Range: aws.String(fmt.Sprintf("bytes=-%d", storage.TrailerSize))})
	if err != nil {
		if httpStatus(err) == 416 { // an empty object
			return storage.ObjectInfo{}, short
		}
		return storage.ObjectInfo{}, s.fail("stat", key, err)
	}
	defer out.Body.Close()
	total := aws.ToInt64(out.ContentLength) // the whole object, when no range applied
	if cr := aws.ToString(out.ContentRange); cr != "" {
		i := strings.LastIndexByte(cr, '/')
		if total, err = strconv.ParseInt(cr[i+1:], 10, 64); err != nil {
			return storage.ObjectInfo{}, fmt.Errorf("stat %s: bad Content-Range %q", key, cr)
		}
	} else if total > storage.TrailerSize {
		return storage.ObjectInfo{}, fmt.Errorf("stat %s: the server ignored the Range header", key)
	}
	if total < storage.TrailerSize {
		return storage.ObjectInfo{}, short
	}
	t := make([]byte, storage.TrailerSize)
	if _, err := io.ReadFull(out.Body, t); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("stat %s: %w", key, err)
	}
	info := storage.ObjectInfo{Key: key, Size: total - storage.TrailerSize, ModTime: aws.ToTime(out.LastModified)}
	if info.SHA256, err = storage.DecodeTrailer(t); err != nil {
		return storage.ObjectInfo{}, &storage.ChecksumError{Key: key, Reason: err.Error()}
	}
	return info, nil
}

// List relies on S3 returning keys in byte order; with one prefix stripped
// from all of them, the order is the keys' own.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	return s.ListAfter(ctx, prefix, "", fn)
}

// ListAfter lists like List, starting after startAfter on the server
// (StartAfter), so the newest keys of a long prefix cost one request.
func (s *Store) ListAfter(ctx context.Context, prefix, startAfter string, fn func(storage.ObjectInfo) error) error {
	in := &s3.ListObjectsV2Input{Bucket: &s.cfg.Bucket, Prefix: aws.String(s.prefix + prefix)}
	if startAfter != "" {
		in.StartAfter = aws.String(s.prefix + startAfter)
	}
	p := s3.NewListObjectsV2Paginator(s.client, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return s.fail("list", prefix, err)
		}
		for _, o := range page.Contents {
			key := strings.TrimPrefix(aws.ToString(o.Key), s.prefix)
			if storage.ValidateKey(key) != nil {
				continue // "folder/" markers and names our keys can't have
			}
			// An object shorter than a trailer is damaged; Get reports it.
			size := max(aws.ToInt64(o.Size)-storage.TrailerSize, 0)
			if err := fn(storage.ObjectInfo{Key: key, Size: size, ModTime: aws.ToTime(o.LastModified)}); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Store) Delete(ctx context.Context, key string) error {
	if err := storage.ValidateKey(key); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.cfg.Bucket, Key: aws.String(s.prefix + key)})
	if err != nil {
		if err = s.fail("delete", key, err); errors.Is(err, storage.ErrNotFound) {
			return nil
		}
		return err
	}
	return nil
}

// fail names the operation and key, and turns the errors a user must fix
// into a *storage.ConfigError that says how. The SDK never puts the secret
// key in an error; the access key id, at most.
func (s *Store) fail(op, key string, err error) error {
	var ae smithy.APIError
	code := ""
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	status := httpStatus(err)
	ce := &storage.ConfigError{Store: fmt.Sprintf("s3 bucket %q", s.cfg.Bucket), Err: err}
	if s.cfg.Endpoint != "" {
		ce.Store += " at " + s.cfg.Endpoint
	}
	var se *v4.SigningError
	switch {
	case code == "NoSuchKey" || code == "NotFound":
		return fmt.Errorf("%s %s: %w", op, key, storage.ErrNotFound)
	case code == "NoSuchBucket":
		ce.Problem, ce.Fix = "no such bucket", "create it, or correct storage.url (and storage.endpoint for S3-compatible servers)"
	case code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch" || code == "AccessDenied" || status == 403,
		code == "XAdminUserNotFound": // versitygw's answer (a 404) to an unknown access key id
		ce.Problem = "access denied"
		if code != "" {
			ce.Problem += " (" + code + ")"
		}
		ce.Fix = "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or the profile or role in use) and the bucket policy"
	case errors.As(err, &se):
		ce.Problem, ce.Fix = "no credentials", "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an IAM role"
	default:
		return fmt.Errorf("%s %s: %w", op, key, err)
	}
	return fmt.Errorf("%s %s: %w", op, key, ce)
}

func httpStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}
