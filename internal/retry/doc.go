// Package retry is binvault's one backoff policy: capped exponential
// delays with jitter, aware of the context, with the attempt count in every
// log line. The stream, the applier and the archiver each retry through
// it, so that they back off alike and say alike how often they tried.
package retry
