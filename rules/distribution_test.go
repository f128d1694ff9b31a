package rules

import (
	"fmt"
	"math"
	"strings"
	"testing"
)

// units returns n identities shaped like minted cookies.
func units(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("uid-%08x-%d", uint32(i)*2654435761, i)
	}
	return out
}

func TestDistributionTenVariants(t *testing.T) {
	const n, k = 100_000, 10
	var variants, split []string
	for i := range k {
		v := fmt.Sprintf("v%d", i)
		variants = append(variants, v)
		split = append(split, v+": 10")
	}
	set := mustLoad(t, fmt.Sprintf("flags:\n  experiment:\n    variants: [%s]\n    rules: [{split: {%s}}]\n",
		strings.Join(variants, ", "), strings.Join(split, ", ")))
	counts := map[string]int{}
	ev := set.NewEvaluation()
	for _, u := range units(n) {
		ev.Reset(set, &testRequest{unit: u})
		counts[ev.Result(0).Variant]++
	}
	chi2 := 0.0
	for _, v := range variants {
		share := float64(counts[v]) / n
		if math.Abs(share-0.1) > 0.005 {
			t.Errorf("%s got %.3f %% of units, want 10 ± 0.5 %%", v, 100*share)
		}
		d := float64(counts[v]) - n/k
		chi2 += d * d / (n / k)
	}
	// The chi-square critical value for 9 degrees of freedom at α = 0.001.
	const critical = 27.877
	t.Logf("chi-square = %.2f (critical %.3f), counts %v", chi2, critical, counts)
	if chi2 > critical {
		t.Errorf("chi-square %.2f > %.3f: the buckets are not uniform", chi2, critical)
	}
}

func TestRaisingARolloutKeepsEveryoneIn(t *testing.T) {
	at := func(pct string) *Set {
		return mustLoad(t, "flags:\n  rollout:\n    rules: [{split: {on: "+pct+", off: "+complement(pct)+"}}]\n")
	}
	ten, twenty := at("10"), at("20")
	in10, in20 := 0, 0
	e10, e20 := ten.NewEvaluation(), twenty.NewEvaluation()
	for _, u := range units(100_000) {
		req := &testRequest{unit: u}
		e10.Reset(ten, req)
		e20.Reset(twenty, req)
		was, is := e10.Result(0).Variant == "on", e20.Result(0).Variant == "on"
		if was && !is {
			t.Fatalf("unit %s was in at 10 %% and out at 20 %%", u)
		}
		if was {
			in10++
		}
		if is {
			in20++
		}
	}
	t.Logf("in at 10 %%: %d, at 20 %%: %d of 100000", in10, in20)
	if in10 < 9500 || in10 > 10500 || in20 < 19500 || in20 > 20500 {
		t.Errorf("shares off: %d at 10 %%, %d at 20 %%", in10, in20)
	}
}

func complement(pct string) string {
	bp, err := parseBasisPoints(pct)
	if err != nil {
		panic(err)
	}
	return formatBasisPoints(Buckets - bp)
}

func TestSplitOrderFollowsVariants(t *testing.T) {
	// variants [control, a, b]: control is the off variant, so a takes
	// buckets 0–1999, b 2000–4999 and control the rest (DESIGN.md §2).
	set := mustLoad(t, "flags:\n  f:\n    variants: [control, a, b]\n    rules: [{split: {b: 30, control: 50, a: 20}}]\n")
	for _, tc := range []struct {
		lo, hi int
		want   string
	}{{0, 2000, "a"}, {2000, 5000, "b"}, {5000, 10000, "control"}} {
		for _, edge := range []int{tc.lo, tc.hi - 1} {
			u := unitInBucket(t, "f", edge, edge+1)
			if got := evaluate(t, set, "f", &testRequest{unit: u}).Variant; got != tc.want {
				t.Errorf("bucket %d: got %s, want %s", edge, got, tc.want)
			}
		}
	}
}

func TestBasisPoints(t *testing.T) {
	for in, want := range map[string]int{"0": 0, "100": 10000, "12.5": 1250, "0.01": 1, "0.29": 29, "33.33": 3333, "7.10": 710} {
		if got, err := parseBasisPoints(in); err != nil || got != want {
			t.Errorf("%s: got %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "100.01", "1e2", ".5", "5.", "0x10", "12.345", "1000", "25%"} {
		if got, err := parseBasisPoints(in); err == nil {
			t.Errorf("%q: got %d, want an error", in, got)
		}
	}
}
