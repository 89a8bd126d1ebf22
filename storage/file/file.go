package file

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/binvault/binvault/storage"
)

// Store is a storage.Store over a directory. Several Stores, in one process
// or many, may share a directory.
type Store struct {
	root string
}

var _ storage.Store = (*Store)(nil)
var _ storage.Checker = (*Store)(nil)

// tmpPattern names the temp files that become objects. The space makes the
// name an invalid key element, so List never shows one and no key collides
// with one; the leading dot hides them from ls.
const tmpPattern = ".tmp *"

// New returns a store over dir, an absolute path. The directory itself must
// exist by the time objects are written: the store creates directories below
// it but never the root, so an unmounted volume is an error, not a new tree.
func New(dir string) (*Store, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("file store %q: directory must be absolute, e.g. file:///var/lib/binvault/archive", dir)
	}
	return &Store{root: filepath.Clean(dir)}, nil
}

// Dir is the directory the store keeps objects in.
func (s *Store) Dir() string { return s.root }

func (s *Store) String() string { return "file://" + s.root }

// Check verifies that the directory exists and a file can be created in it.
func (s *Store) Check(ctx context.Context) error {
	f, err := os.CreateTemp(s.root, tmpPattern)
	if err != nil {
		return fmt.Errorf("check: %w", s.rootError(err))
	}
	f.Close()
	return os.Remove(f.Name())
}

func (s *Store) Put(ctx context.Context, key string, r io.Reader) (storage.ObjectInfo, error) {
	return s.put(ctx, key, r, false)
}

func (s *Store) PutIfAbsent(ctx context.Context, key string, r io.Reader) (storage.ObjectInfo, error) {
	return s.put(ctx, key, r, true)
}

func (s *Store) put(ctx context.Context, key string, r io.Reader, ifAbsent bool) (storage.ObjectInfo, error) {
	if err := storage.ValidateKey(key); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("put: %w", err)
	}
	name := s.path(key)
	f, err := s.createTemp(key)
	if err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("put %s: %w", key, err)
	}
	published := false
	defer func() {
		f.Close()
		if !published {
			os.Remove(f.Name())
		}
	}()
	fr := storage.Frame(ctxReader{ctx, r})
	if _, err := io.Copy(f, fr); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("put %s: %w", key, err)
	}
	if err := f.Sync(); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("put %s: %w", key, err)
	}
	st, err := f.Stat()
	if err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("put %s: %w", key, err)
	}
	if ifAbsent {
		// link(2), unlike rename(2), fails when the name exists: the check
		// and the publication are one step, even across processes.
		err = os.Link(f.Name(), name)
		if errors.Is(err, fs.ErrExist) && !isDir(name) {
			return storage.ObjectInfo{}, fmt.Errorf("put %s: %w", key, storage.ErrExists)
		}
	} else {
		err = os.Rename(f.Name(), name)
		published = err == nil
	}
	if err != nil {
		if isDir(name) {
			err = fmt.Errorf("a directory of other keys has this name: %w", err)
		}
		return storage.ObjectInfo{}, fmt.Errorf("put %s: %w", key, err)
	}
	if err := s.syncDirs(filepath.Dir(name)); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("put %s: %w", key, err)
	}
	info := fr.Info(key)
	info.ModTime = st.ModTime()
	return info, nil
}

// createTemp makes the temp file in the object's own directory, so rename
// and link stay within one directory and file system. Once it exists, the
// temp file keeps a concurrent Delete from removing that directory; before,
// a Delete may, so creation retries.
func (s *Store) createTemp(key string) (*os.File, error) {
	dir := filepath.Dir(s.path(key))
	for attempt := 0; ; attempt++ {
		var f *os.File
		err := s.mkdirs(key)
		if err == nil {
			f, err = os.CreateTemp(dir, tmpPattern)
		}
		if err == nil || !errors.Is(err, fs.ErrNotExist) || attempt == 10 {
			return f, err
		}
	}
}

// mkdirs creates the directories of key below the root, but not the root.
func (s *Store) mkdirs(key string) error {
	if _, err := os.Stat(s.root); err != nil {
		return s.rootError(err)
	}
	for i := 0; i < len(key); i++ {
		if key[i] != '/' {
			continue
		}
		err := os.Mkdir(s.path(key[:i]), 0o750)
		if err == nil || errors.Is(err, fs.ErrExist) && isDir(s.path(key[:i])) {
			continue
		}
		if errors.Is(err, fs.ErrExist) || errors.Is(err, syscall.ENOTDIR) {
			return fmt.Errorf("%s is an object, so it cannot also be a directory of other keys", key[:i])
		}
		return err
	}
	return nil
}

// syncDirs makes a new or renamed entry durable: fsync of the directory that
// holds it, and of every directory up to the root, which may be new too.
func (s *Store) syncDirs(dir string) error {
	for {
		if err := syncDir(dir); err != nil {
			return err
		}
		if dir == s.root || len(dir) <= len(s.root) {
			return nil
		}
		dir = filepath.Dir(dir)
	}
}

// syncDir fsyncs dir; one that a concurrent Delete removed has nothing left
// to make durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	f, _, err := s.open(key)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	return storage.Unframe(key, f), nil
}

// ReadPrefix reads the first n bytes of the content, without the rest.
func (s *Store) ReadPrefix(ctx context.Context, key string, n int64) ([]byte, error) {
	f, st, err := s.open(key)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	defer f.Close()
	size := st.Size() - storage.TrailerSize
	if size < 0 {
		return nil, &storage.ChecksumError{Key: key, Reason: "shorter than its checksum trailer"}
	}
	b := make([]byte, min(n, size))
	if _, err := f.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	return b, nil
}

func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	f, st, err := s.open(key)
	if err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("stat %s: %w", key, err)
	}
	defer f.Close()
	info := storage.ObjectInfo{Key: key, Size: st.Size() - storage.TrailerSize, ModTime: st.ModTime()}
	if info.Size < 0 {
		return storage.ObjectInfo{}, &storage.ChecksumError{Key: key, Reason: "shorter than its checksum trailer"}
	}
	t := make([]byte, storage.TrailerSize)
	if _, err := f.ReadAt(t, info.Size); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("stat %s: %w", key, err)
	}
	if info.SHA256, err = storage.DecodeTrailer(t); err != nil {
		return storage.ObjectInfo{}, &storage.ChecksumError{Key: key, Reason: err.Error()}
	}
	return info, nil
}

// open opens key's file; a missing file, a directory, or a path through a
// file is "not found".
func (s *Store) open(key string) (*os.File, fs.FileInfo, error) {
	if err := storage.ValidateKey(key); err != nil {
		return nil, nil, err
	}
	f, err := os.Open(s.path(key))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			if _, rerr := os.Stat(s.root); rerr != nil {
				return nil, nil, s.rootError(rerr)
			}
			return nil, nil, storage.ErrNotFound
		}
		return nil, nil, err
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = storage.ErrNotFound
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, st, nil
}

// List walks directories in an order that yields keys in byte order: an entry
// sorts as its name, or as its name plus "/" if it is a directory, since every
// key below it starts so ("a-b" < "a/…" < "a0"). Memory is bounded by the
// largest directory, not by the archive.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	start := ""
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		start = prefix[:i]
		if storage.ValidateKey(start) != nil {
			return nil // no valid key has this prefix, and the path may leave the root
		}
	}
	if _, err := os.Stat(s.root); err != nil {
		return fmt.Errorf("list %s: %w", prefix, s.rootError(err))
	}
	if err := s.walk(ctx, start, prefix, fn); err != nil {
		return fmt.Errorf("list %s: %w", prefix, err)
	}
	return nil
}

func (s *Store) walk(ctx context.Context, dir, prefix string, fn func(storage.ObjectInfo) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	entries, err := os.ReadDir(s.path(dir))
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil // no such prefix, or a concurrent Delete emptied it
	}
	if err != nil {
		return err
	}
	type entry struct {
		sortKey string
		fs.DirEntry
	}
	var sorted []entry
	for _, e := range entries {
		switch {
		case e.IsDir():
			sorted = append(sorted, entry{e.Name() + "/", e})
		case e.Type().IsRegular():
			sorted = append(sorted, entry{e.Name(), e})
		}
	}
	slices.SortFunc(sorted, func(a, b entry) int { return strings.Compare(a.sortKey, b.sortKey) })
	for _, e := range sorted {
		key := e.sortKey
		if dir != "" {
			key = dir + "/" + e.sortKey
		}
		if e.IsDir() {
			if strings.HasPrefix(key, prefix) || strings.HasPrefix(prefix, key) {
				if err := s.walk(ctx, strings.TrimSuffix(key, "/"), prefix, fn); err != nil {
					return err
				}
			}
			continue
		}
		if !strings.HasPrefix(key, prefix) || storage.ValidateKey(key) != nil {
			continue // temp files and names no key can have
		}
		st, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted since ReadDir
		}
		if err != nil {
			return err
		}
		// A file shorter than a trailer is damaged; Get reports it.
		size := max(st.Size()-storage.TrailerSize, 0)
		if err := fn(storage.ObjectInfo{Key: key, Size: size, ModTime: st.ModTime()}); err != nil {
			return err
		}
	}
	return nil
}

// Delete removes key and then the directories it leaves empty, up to the
// root. A Put racing into such a directory retries (see createTemp).
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := storage.ValidateKey(key); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	name := s.path(key)
	if isDir(name) {
		return nil // a directory of other keys, not an object
	}
	err := os.Remove(name)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	dir := filepath.Dir(name)
	for dir != s.root && syscall.Rmdir(dir) == nil {
		dir = filepath.Dir(dir)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

func (s *Store) path(key string) string { return filepath.Join(s.root, filepath.FromSlash(key)) }

func (s *Store) rootError(err error) error {
	ce := &storage.ConfigError{Store: fmt.Sprintf("directory %q", s.root), Err: err}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		ce.Problem, ce.Fix = "does not exist", "create it (binvault never creates the archive root) or correct storage.url"
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EROFS):
		ce.Problem, ce.Fix = "not writable", "give the binvault user write permission or correct storage.url"
	default:
		return err
	}
	return ce
}

func isDir(name string) bool {
	st, err := os.Lstat(name)
	return err == nil && st.IsDir()
}

// ctxReader ends a long copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
