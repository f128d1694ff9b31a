package rules

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// hostileSources are the shapes that cost the parser most per byte: a
// value in one or two characters, hundreds of thousands of times.
func hostileSources(items int) map[string]string {
	return map[string]string{
		"flow list.yaml":    "flags: [" + strings.Repeat("1,", items) + "1]\n",
		"flow mapping.yaml": "{" + strings.Repeat("a,", items) + "a}\n",
		"block list.yaml":   "flags:\n" + strings.Repeat("- 1\n", items),
		"nested.yaml":       strings.Repeat("[", items) + strings.Repeat("]", items),
		"in list.json":      `{"flags": {"a": {"rules": [{"when": {"user": {"in": [` + strings.Repeat(`"x",`, items) + `"x"]}}, "serve": "on"}]}}}`,
	}
}

// TestSourceLimitsBoundMemory: a source past the node limit is refused
// before the parser builds anything, so refusing it costs next to no memory
// (parsing 2 million nodes would allocate about 500 MB).
func TestSourceLimitsBoundMemory(t *testing.T) {
	for name, src := range hostileSources(2_000_000) {
		t.Run(name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := Parse(name, []byte(src))
			runtime.ReadMemStats(&after)
			if err == nil || !strings.Contains(err.Error(), "more than the limit of 500000: split the flags over several files") {
				t.Fatalf("got %v", err)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
				t.Errorf("refusing a %d-byte source allocated %d MB", len(src), alloc>>20)
			}
		})
	}
	big := strings.Repeat("#", MaxSourceSize+1)
	if _, err := Parse("big.yaml", []byte(big)); err == nil || !strings.Contains(err.Error(), "more than the limit of 33554432") {
		t.Errorf("a source over the size limit: %v", err)
	}
}

// TestTenThousandFlagsFitTheLimits: the limits leave room for large real
// sets (the compile benchmark's 10,000 flags in one file).
func TestTenThousandFlagsFitTheLimits(t *testing.T) {
	src := tenThousandFlags()
	if n := nodeBound(src.Data); n > MaxSourceNodes {
		t.Fatalf("10,000 flags count as %d nodes, over the limit", n)
	}
}

func countNodes(n *yaml.Node) int {
	c := 1
	for _, k := range n.Content {
		c += countNodes(k)
	}
	return c
}

// FuzzNodeBound checks that nodeBound never under-counts what the YAML
// parser builds: the memory limit rests on it.
func FuzzNodeBound(f *testing.F) {
	for _, s := range []string{"a", "{a}", "{a, b}", "[a]", "[[[a]]]", "- - - a", "? a", "a: b", "a:\n", "{a: {b}}", "[{a}, {b}]",
		"- &x a\n- *x\n", "!!map {}", "a: |\n  b\n  c\n", "\"a,b\": [1, 2]", "{? a}", "[a: b]", "[? a : b, c]", "{a: b, c}",
		"---\na\n...\n---\nb", "%YAML 1.2\n---\n[]", "a: [b, {c: d}]\nb:\n- e\n-\n- f: g\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var root yaml.Node
		if yaml.Unmarshal(data, &root) != nil {
			return
		}
		if got, bound := countNodes(&root), nodeBound(data); got > bound {
			t.Fatalf("%q: %d nodes, bound %d", data, got, bound)
		}
	})
}

func TestErrorsAreCapped(t *testing.T) {
	var sb strings.Builder
	sb.WriteString("flags:\n")
	for i := range 150 {
		fmt.Fprintf(&sb, "  f%d: {rules: [{serve: maybe}]}\n", i)
	}
	other := Source{Name: "b.yaml", Data: []byte("flags:\n  g: {rules: [{serve: nope}]}\n  h: {descripton: x}\n")}
	_, err := Load(Source{Name: "a.yaml", Data: []byte(sb.String())}, other)
	es, _ := err.(Errors)
	if len(es) != MaxErrors+1 || es[MaxErrors].Message != "… and 52 more errors: fix these first" || es.Count() != 152 {
		t.Fatalf("%d lines, the last %v", len(es), es[len(es)-1])
	}
}
