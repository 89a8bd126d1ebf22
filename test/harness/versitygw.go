package harness

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// VersityGWVersion is the S3 server version scripts/setup.sh builds.
const VersityGWVersion = "v1.8.0"

// S3 is one running versitygw over a POSIX directory.
type S3 struct {
	Dir       string // the gateway's root; each subdirectory is a bucket
	Port      int
	AccessKey string
	SecretKey string
	Bucket    string // created before start
	LogFile   string

	bin  string
	mu   sync.Mutex
	cmd  *exec.Cmd
	exit chan struct{}
}

// VersityGWPath finds the versitygw binary: $BINVAULT_VERSITYGW, the setup
// script's cache, then $PATH.
func VersityGWPath() (string, error) {
	if p := os.Getenv("BINVAULT_VERSITYGW"); p != "" {
		return p, nil
	}
	if p := filepath.Join(CacheDir(), "versitygw-"+VersityGWVersion, "versitygw"); fileExists(p) {
		return p, nil
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("versitygw not found: run scripts/setup.sh (builds versitygw %s into %s)", VersityGWVersion, CacheDir())
}

// CacheDir is where scripts/setup.sh keeps built tools.
func CacheDir() string {
	if d := os.Getenv("BINVAULT_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "binvault")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "binvault")
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// StartS3 starts versitygw with one bucket and stops it at test cleanup.
func StartS3(t testing.TB) *S3 {
	t.Helper()
	skipInUnitRun(t, "an S3 server (versitygw)")
	bin, err := VersityGWPath()
	if err != nil {
		missing(t, err.Error())
	}
	s, err := NewS3(t.TempDir(), bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	return s
}

// NewS3 prepares a gateway root below dir with the bucket "binvault-test".
func NewS3(dir, bin string) (*S3, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	s := &S3{
		Dir:       filepath.Join(dir, "s3root"),
		Port:      port,
		AccessKey: "binvaultaccess",
		SecretKey: "binvault-secret-" + strconv.Itoa(port),
		Bucket:    "binvault-test",
		LogFile:   filepath.Join(dir, "versitygw.log"),
		bin:       bin,
	}
	if err := os.MkdirAll(filepath.Join(s.Dir, s.Bucket), 0o755); err != nil {
		return nil, err
	}
	return s, nil
}

// Endpoint is the gateway's http URL.
func (s *S3) Endpoint() string { return fmt.Sprintf("http://127.0.0.1:%d", s.Port) }

// URL is the s3:// storage URL for the bucket and a prefix.
func (s *S3) URL(prefix string) string {
	if prefix == "" {
		return "s3://" + s.Bucket
	}
	return "s3://" + s.Bucket + "/" + prefix
}

// Env is the credential environment a binvault process needs.
func (s *S3) Env() []string {
	// IMDS off: a test must never reach for the cloud's metadata address.
	return []string{"AWS_ACCESS_KEY_ID=" + s.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s.SecretKey, "AWS_REGION=us-east-1", "AWS_EC2_METADATA_DISABLED=true"}
}

// Start runs the gateway (again, after Stop, on the same port and data) and
// waits until it accepts connections.
func (s *S3) Start() error {
	s.mu.Lock()
	if s.cmd != nil {
		s.mu.Unlock()
		return fmt.Errorf("versitygw already running")
	}
	log, err := os.OpenFile(s.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	cmd := exec.Command(s.bin, "--port", fmt.Sprintf("127.0.0.1:%d", s.Port), "posix", s.Dir)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+s.AccessKey, "ROOT_SECRET_KEY="+s.SecretKey)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		s.mu.Unlock()
		return fmt.Errorf("start versitygw: %w", err)
	}
	exit := make(chan struct{})
	s.cmd, s.exit = cmd, exit
	s.mu.Unlock()
	go func() { cmd.Wait(); log.Close(); close(exit) }()

	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exit:
			return fmt.Errorf("versitygw exited during start-up; log:\n%s", tail(s.LogFile, 20))
		default:
		}
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.Port), time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("versitygw did not listen within 20s; log:\n%s", tail(s.LogFile, 20))
}

// Stop kills the gateway (it keeps nothing in memory worth a clean stop).
func (s *S3) Stop() {
	s.mu.Lock()
	cmd, exit := s.cmd, s.exit
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exit:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-exit
	}
}

// Kill stops the gateway abruptly, as a crash or a cut would.
func (s *S3) Kill() {
	s.mu.Lock()
	cmd, exit := s.cmd, s.exit
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-exit
}
