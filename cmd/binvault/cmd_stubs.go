package main

import "github.com/spf13/cobra"

// Commands whose features land in later releases. Each still loads and
// validates the configuration, so a bad file is reported the same way
// everywhere, then says plainly that it cannot do the work yet.

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
