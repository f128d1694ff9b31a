package rules

import (
	"bytes"
	"encoding/csv"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/zeebo/xxh3"
)

const vectorsFile = "../testdata/hash-vectors.csv"

var updateVectors = flag.Bool("update-vectors", false, "regenerate "+vectorsFile+" with xxhsum -H3 (the reference implementation)")

func TestHashOfEmptyString(t *testing.T) {
	// XXH3_64bits("") with seed 0, as published by the reference implementation.
	if got := xxh3Of(""); got != 0x2D06800538D394C2 {
		t.Fatalf("XXH3 of the empty string = %#x, want 0x2D06800538D394C2", got)
	}
}

func xxh3Of(s string) uint64 { return xxh3.HashString(s) }

func TestHashVectors(t *testing.T) {
	if *updateVectors {
		writeVectors(t)
	}
	vectors := readVectors(t)
	if len(vectors) < 1000 {
		t.Fatalf("%d vectors, want at least 1000", len(vectors))
	}
	var nonASCII, long int
	for _, v := range vectors {
		if got := Hash(v.salt, v.unit); got != v.hash {
			t.Errorf("Hash(%q, %q) = %016x, want %016x", v.salt, v.unit, got, v.hash)
		}
		if got := Bucket(v.salt, v.unit); got != v.bucket {
			t.Errorf("Bucket(%q, %q) = %d, want %d", v.salt, v.unit, got, v.bucket)
		}
		if got := evaluationBucket(t, v.salt, v.unit); got != v.bucket {
			t.Errorf("an evaluation's bucket for %q, %q = %d, want %d", v.salt, v.unit, got, v.bucket)
		}
		if utf8.RuneCountInString(v.unit) != len(v.unit) {
			nonASCII++
		}
		if len(v.salt)+len(v.unit) > 256 {
			long++
		}
	}
	if nonASCII < 100 || long < 50 {
		t.Errorf("vectors cover %d non-ASCII and %d long units; want at least 100 and 50", nonASCII, long)
	}
}

// TestHashVectorsAgainstXXHSum checks a sample of the vectors against the
// reference implementation's own CLI, so the file is not only the Go
// library agreeing with itself.
func TestHashVectorsAgainstXXHSum(t *testing.T) {
	if _, err := exec.LookPath("xxhsum"); err != nil {
		t.Skip("xxhsum not installed: apt-get install xxhash (the reference XXH3 CLI)")
	}
	vectors := readVectors(t)
	step := max(1, len(vectors)/150)
	for i := 0; i < len(vectors); i += step {
		v := vectors[i]
		if got := xxhsum(t, v.salt+"."+v.unit); got != v.hash {
			t.Errorf("xxhsum -H3 of %q.%q = %016x, the vector says %016x", v.salt, v.unit, got, v.hash)
		}
	}
}

type vector struct {
	salt, unit string
	hash       uint64
	bucket     int
}

func readVectors(t *testing.T) []vector {
	t.Helper()
	f, err := os.Open(vectorsFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var out []vector
	for _, r := range rows[1:] {
		h, err := strconv.ParseUint(r[2], 16, 64)
		if err != nil {
			t.Fatal(err)
		}
		b, err := strconv.Atoi(r[3])
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, vector{salt: r[0], unit: r[1], hash: h, bucket: b})
	}
	return out
}

func xxhsum(t *testing.T, s string) uint64 {
	t.Helper()
	cmd := exec.Command("xxhsum", "-H3", "-")
	cmd.Stdin = strings.NewReader(s)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("xxhsum: %v", err)
	}
	// "XXH3 (stdin) = 2d06800538d394c2" (0.8.1) or "2d06800538d394c2  stdin".
	fields := strings.Fields(string(out))
	for _, f := range fields {
		if h, err := strconv.ParseUint(strings.TrimPrefix(f, "XXH3_"), 16, 64); err == nil && len(f) >= 16 {
			return h
		}
	}
	t.Fatalf("cannot read xxhsum output %q", out)
	return 0
}

// writeVectors regenerates the vectors file from xxhsum, the reference.
func writeVectors(t *testing.T) {
	if _, err := exec.LookPath("xxhsum"); err != nil {
		t.Fatal("-update-vectors needs xxhsum: apt-get install xxhash")
	}
	rng := rand.New(rand.NewPCG(2026, 11))
	salts := []string{"new-checkout", "dark-mode", "search-ranking", "pricing-v2", "a", "checkout-2026", "x-1"}
	alphabets := [][]rune{
		[]rune("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"),
		[]rune("äöüßéèçñøåÄÖÜ日本語中文한국어русскийΕλληνικάعربى👍🚀✓"),
		[]rune(" !\"#$%&'()*+,./:;<=>?@[\\]^`{|}~"),
	}
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Write([]string{"salt", "unit", "xxh3_hex", "bucket"})
	for i := 0; i < 1200; i++ {
		salt := salts[i%len(salts)]
		var n int
		var alpha []rune
		switch {
		case i < 700: // cookie-like ids
			n, alpha = 8+rng.IntN(40), alphabets[0]
		case i < 900:
			n, alpha = 1+rng.IntN(30), append(alphabets[1], alphabets[0]...)
		case i < 1000:
			n, alpha = 1+rng.IntN(30), append(alphabets[2], alphabets[0]...)
		default: // long units, past the stack buffer
			n, alpha = 250+rng.IntN(800), alphabets[0]
		}
		var u strings.Builder
		for range n {
			u.WriteRune(alpha[rng.IntN(len(alpha))])
		}
		h := xxhsum(t, salt+"."+u.String())
		w.Write([]string{salt, u.String(), fmt.Sprintf("%016x", h), strconv.Itoa(int(h % Buckets))})
	}
	w.Flush()
	if err := os.WriteFile(vectorsFile, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// evaluationBucket is the bucket a split flag with salt computes for unit.
func evaluationBucket(t *testing.T, salt, unit string) int {
	t.Helper()
	set := mustLoad(t, fmt.Sprintf("flags:\n  f:\n    salt: %q\n    rules: [{split: {on: 50, off: 50}}]\n", salt))
	return evaluate(t, set, "f", &testRequest{unit: unit}).Bucket
}
