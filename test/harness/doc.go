// Package harness starts real servers for tests: MariaDB primaries and
// replicas, and a versitygw S3 server, each in its own temporary directory on
// a free loopback port, stopped by PID when the test ends (even when it fails).
package harness
