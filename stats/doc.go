// Package stats holds the counting and the statistics of the release loop,
// with no knowledge of HTTP, Caddy or flags: a windowed set that remembers
// what has been seen (to record an exposure once per user), the chi-square
// test a split is checked with (sample ratio mismatch), a log-linear
// histogram of durations (a variant's time to first byte) with
// order-statistic bounds on its quantiles, and the sequential test a
// guarded rollout compares failure rates with.
//
// Everything here is safe for concurrent use unless said otherwise, and the
// per-request paths allocate nothing.
package stats
