package main

import "github.com/spf13/cobra"

// Commands whose features land in later releases. Each still loads and
// validates the configuration, so a bad file is reported the same way
// everywhere, then says plainly that it cannot do the work yet.

func newRestoreCmd(g *globals) *cobra.Command {
	c := stub(g, "restore", "Restore a server to a point in time from the archive")
	f := c.Flags()
	f.String("target", "", "server to restore into, mysql://user:password@host:port")
	f.String("to-time", "", "restore every transaction committed at or before this RFC3339 time")
	f.String("to-gtid", "", "restore up to and including this GTID")
	f.Bool("latest", false, "restore everything archived")
	f.Bool("dry-run", false, "print the plan and change nothing")
	f.Bool("force", false, "restore into a server that already holds user databases")
	return c
}

func newPruneCmd(g *globals) *cobra.Command {
	c := stub(g, "prune", "Apply retention: delete old backups and the segments only they need")
	c.Flags().Bool("dry-run", false, "list what would be deleted")
	return c
}

func stub(g *globals, name, short string) *cobra.Command {
	return &cobra.Command{
		Use:   name,
		Short: short + " (" + notImplementedY + ")",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := g.loadConfig(); err != nil {
				return err
			}
			return notImplemented(name)
		},
	}
}
