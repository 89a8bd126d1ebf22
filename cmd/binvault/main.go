package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/binvault/binvault/internal/config"
	"github.com/binvault/binvault/internal/usage"
	"github.com/binvault/binvault/storage"
)

// Exit codes, the CLI's contract.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
	envConfig   = "BINVAULT_CONFIG"
)

// errSilent ends the command with exit 1 after it has already reported why.
var errSilent = errors.New("")

// exitError carries an exit code chosen by a command that printed its own report.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

type globals struct {
	configPath string
	logFormat  string
	logLevel   string
	stdout     io.Writer
	stderr     io.Writer
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	g := &globals{stdout: stdout, stderr: stderr}
	root := newRoot(g)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if errors.Is(err, errSilent) {
		return exitFailure
	}
	fmt.Fprintln(stderr, "binvault: "+oneLine(err.Error()))
	var ce *storage.ConfigError
	if usage.Is(err) || isFlagError(err) || errors.As(err, &ce) {
		return exitUsage
	}
	return exitFailure
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// cobra reports flag and argument problems as plain errors; these prefixes
// are its wording.
func isFlagError(err error) bool {
	for _, p := range []string{"unknown flag", "unknown shorthand", "unknown command", "flag needs", "invalid argument", "required flag", "accepts ", "if any flags in the group", "none of the others can be"} {
		if strings.HasPrefix(err.Error(), p) {
			return true
		}
	}
	return false
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "binvault",
		Short: "MySQL/MariaDB disaster recovery: stream, replicate, archive, back up, restore to any point in time",
		Long: `binvault streams row-format binlog events from a primary, applies them to a
replica exactly once, archives them as verified segments to S3-compatible
storage, takes scheduled full backups, and restores a server to any point in time.

Exit codes: 0 success, 1 operational failure, 2 usage or configuration error.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return g.setupLogging()
		},
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usage.Errorf("%v (see binvault %s --help)", err, c.Name())
	})
	pf := root.PersistentFlags()
	pf.StringVar(&g.configPath, "config", "", "configuration file (or set "+envConfig+")")
	pf.StringVar(&g.logFormat, "log-format", "", "log format on stderr: text or json (default: text on a terminal, json otherwise)")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.AddCommand(
		newRunCmd(g), newServeCmd(g), newBackupCmd(g), newBackupsCmd(g), newSegmentsCmd(g),
		newRestoreCmd(g), newPromoteCmd(g), newFindCmd(g), newVerifyCmd(g), newStatusCmd(g), newPruneCmd(g), newVersionCmd(g),
	)
	return root
}

func (g *globals) setupLogging() error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return usage.Errorf("--log-level %q: use debug, info, warn or error", g.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	format := g.logFormat
	if format == "" {
		format = "json"
		if f, ok := g.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			format = "text"
		}
	}
	switch format {
	case "text":
		slog.SetDefault(slog.New(slog.NewTextHandler(g.stderr, opts)))
	case "json":
		slog.SetDefault(slog.New(slog.NewJSONHandler(g.stderr, opts)))
	default:
		return usage.Errorf("--log-format %q: use text or json", g.logFormat)
	}
	return nil
}

// loadConfig reads --config or $BINVAULT_CONFIG.
func (g *globals) loadConfig() (*config.Config, error) { return g.load(config.Load) }

// loadServeConfig reads the configuration of binvault serve (no source).
func (g *globals) loadServeConfig() (*config.Config, error) { return g.load(config.LoadServe) }

func (g *globals) load(load func(string) (*config.Config, error)) (*config.Config, error) {
	path := g.configPath
	if path == "" {
		path = os.Getenv(envConfig)
	}
	if path == "" {
		return nil, usage.Errorf("no configuration: pass --config FILE or set %s (configs/binvault.example.yaml is a starting point)", envConfig)
	}
	cfg, err := load(path)
	if err != nil {
		return nil, usage.Wrap(err)
	}
	return cfg, nil
}
