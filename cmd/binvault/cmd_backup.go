package main

import (
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/binvault/binvault/backup"
)

func newBackupCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "backup",
		Short: "Take a full backup now and print its id",
		Long: `backup takes a consistent logical backup of every user database of the
primary (source.dsn) as of one instant, tied to the exact binlog position
of that instant, and stores it under backups/<id>/ in the store. Commits on
the primary are held for a few milliseconds while backup.parallel
connections start their snapshots; the tables are then dumped in parallel.
The id is printed on stdout once the manifest, the last object, is stored.

Only one backup runs at a time per store: a second one exits 1 naming the
running one. Leftovers of an interrupted backup are deleted first.

The user needs SELECT, SHOW VIEW, TRIGGER, EVENT and RELOAD on *.*
(BINLOG ADMIN additionally lets DDL on an already dumped table proceed
before the backup ends).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.loadConfig()
			if err != nil {
				return err
			}
			dsn, err := primaryDSN(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			st, err := openStore(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			prog := &backup.Progress{}
			stop := g.backupProgress(prog)
			m, err := backup.Run(cmd.Context(), st, dsn, backup.Options{
				Parallel:   cfg.Backup.Parallel,
				ChunkBytes: int64(cfg.Backup.ChunkSize),
				Progress:   prog,
				Log:        slog.Default(),
			})
			stop()
			if err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, m.ID)
			return nil
		},
	}
}

// backupProgress draws a progress bar on stderr when it is a terminal:
// rows against the server's estimate, with tables and bytes alongside.
func (g *globals) backupProgress(p *backup.Progress) (stop func()) {
	f, ok := g.stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return func() {}
	}
	bar := progressbar.NewOptions64(-1,
		progressbar.OptionSetWriter(f),
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowCount(),
		progressbar.OptionSetItsString("rows"),
		progressbar.OptionShowIts(),
		progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionSetDescription("backup"),
	)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		maxSet := int64(-1)
		for {
			select {
			case <-done:
				bar.Finish()
				return
			case <-t.C:
			}
			if total := p.RowsTotal.Load(); total > 0 && maxSet < 0 {
				bar.ChangeMax64(total)
				maxSet = total
			}
			rows := p.Rows.Load()
			if maxSet >= 0 && rows > maxSet {
				maxSet = rows // the server's row count is an estimate
				bar.ChangeMax64(maxSet)
			}
			phase, _ := p.Phase.Load().(string)
			bar.Describe(fmt.Sprintf("%s: tables %d/%d, %s SQL, %s stored", phase, p.TablesDone.Load(), p.TablesTotal.Load(),
				humanBytes(p.Bytes.Load()), humanBytes(p.StoredBytes.Load())))
			bar.Set64(rows)
		}
	}()
	return func() {
		close(done)
		<-finished
		fmt.Fprintln(f)
	}
}
