package main

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/spf13/cobra"

	"github.com/binvault/binvault/internal/archive"
	"github.com/binvault/binvault/storage"
)

func newVerifyCmd(g *globals) *cobra.Command {
	var parallel int
	c := &cobra.Command{
		Use:   "verify",
		Short: "Check every archived object and the continuity of the segment chain",
		Long: `verify reads every segment in full: the stored object's SHA-256, the binlog's
SHA-256 from the manifest, every event's CRC32, whole transactions, and the
manifest's counts and GTIDs; then it checks that the chain has no gap or
overlap and that every stored segment object has a manifest.
Exit 0: all good. Exit 1: damage found, one line per damaged object.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.loadConfig()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			st, ix, err := loadIndex(ctx, cfg)
			if err != nil {
				return err
			}
			var problems []string
			for _, p := range archive.Chain(ix.Segments) {
				problems = append(problems, "chain: "+p)
			}
			// Segment objects without a manifest are invisible to restore:
			// leftovers of an interrupted upload, worth knowing about.
			known := map[uint64]bool{}
			for _, s := range ix.Segments {
				known[s.Seq] = true
			}
			var notes []string
			err = st.List(ctx, archive.SegmentsPrefix, func(oi storage.ObjectInfo) error {
				seq, manifest, ok := archive.ParseSegmentsKey(oi.Key)
				switch {
				case ok && seq < ix.Floor:
					// Below the prune floor: not in the archive any more.
					notes = append(notes, fmt.Sprintf("note: %s is below the prune floor (segment %d): left by an interrupted prune, the next prune deletes it", oi.Key, ix.Floor))
				case ok && !manifest && !known[seq]:
					problems = append(problems, fmt.Sprintf("orphan: %s has no manifest (an interrupted upload; the next run replaces it)", oi.Key))
				}
				return nil
			})
			if err != nil {
				return err
			}
			var mu sync.Mutex
			var opErr error
			sem := make(chan struct{}, max(1, parallel))
			var wg sync.WaitGroup
			txns := 0
			damaged := map[uint64]string{}
			for _, seg := range ix.Segments {
				txns += seg.Txns
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					err := archive.VerifySegment(ctx, st, seg)
					mu.Lock()
					defer mu.Unlock()
					var de *archive.DamageError
					switch {
					case errors.As(err, &de):
						damaged[seg.Seq] = "damaged: " + de.Error()
					case err != nil && opErr == nil:
						opErr = err
					}
				}()
			}
			wg.Wait()
			if opErr != nil {
				return opErr
			}
			if len(damaged) > 0 {
				// A prune running meanwhile deletes manifests, then segments:
				// a segment listed before may be gone now. Below the floor it
				// is no longer part of the archive, so not damage.
				cs, err := archive.ReadCatalogState(ctx, st)
				if err != nil {
					return err
				}
				seqs := slices.Sorted(maps.Keys(damaged))
				for _, seq := range seqs {
					if seq < cs.Floor {
						notes = append(notes, fmt.Sprintf("note: segment %d was pruned while verify ran (the prune floor is now %d)", seq, cs.Floor))
						continue
					}
					problems = append(problems, damaged[seq])
				}
			}
			for _, p := range append(notes, problems...) {
				fmt.Fprintln(g.stdout, p)
			}
			if len(problems) > 0 {
				fmt.Fprintf(g.stdout, "verify: %d problem(s) in %d segments of %s\n", len(problems), len(ix.Segments), st)
				return exitError{exitFailure}
			}
			fmt.Fprintf(g.stdout, "verify: %d segments, %d transactions in %s: all objects intact, chain continuous\n", len(ix.Segments), txns, st)
			return nil
		},
	}
	c.Flags().IntVar(&parallel, "parallel", 4, "segments verified at once")
	return c
}
