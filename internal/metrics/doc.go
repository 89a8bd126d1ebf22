// Package metrics holds every Prometheus metric binvault exports, in one
// place so the README's list and the code cannot drift apart silently
// (a test compares them).
package metrics
