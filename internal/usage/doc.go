// Package usage marks errors that the user fixes by changing input:
// configuration, flags, credentials, server settings. The CLI maps them to
// exit code 2; every other error is an operational failure (exit 1).
package usage
