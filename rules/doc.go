// Package rules is the edgeflags flag engine: it parses flag definition files
// (YAML 1.2 or JSON, one schema), rejects every mistake at load time with an
// error that names the file, the flag and the field, compiles the definitions
// into a [Set], and evaluates a Set per request without allocating.
//
// Typical use:
//
//	set, err := rules.Load(rules.Source{Name: "flags.yaml", Data: data})
//	if err != nil { … }            // every problem in every source, one per line
//	ev := set.NewEvaluation()       // once per goroutine or request pool
//	ev.Reset(set, req)              // req implements Request
//	ev.All()
//	res, _ := ev.Lookup("new-checkout")
//
// The package knows nothing of HTTP or Caddy: request attributes come through
// the small [Request] interface, read lazily, so a flag that never looks at a
// header never reads one. Bucketing follows the hashing contract of
// DESIGN.md §2 and is reproducible in any language (see [Bucket]).
package rules
