// Package work runs indexed jobs on a fixed set of workers.
package work
