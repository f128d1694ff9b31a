package dashboard

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
)

// DiffLine is one line of a before/after diff: Op is ' ' (both), '-'
// (before only) or '+' (after only).
type DiffLine struct {
	Op   byte
	Text string
}

// Mark is the line's sign as text, so the diff reads without colour.
func (l DiffLine) Mark() string { return string(l.Op) }

// Diff compares two flag definitions (JSON; nil is no flag) line by line,
// indented, as people read them: the lines only one side has, among the
// lines both share. Far from a change, shared lines are left out.
func Diff(before, after json.RawMessage) []DiffLine {
	a, b := lines(before), lines(after)
	// The longest common subsequence, by dynamic programming: definitions
	// are tens of lines. Beyond maxCells, the whole before, then the whole after.
	const maxCells = 1 << 20
	if len(a)*len(b) > maxCells {
		var out []DiffLine
		for _, l := range a {
			out = append(out, DiffLine{'-', l})
		}
		for _, l := range b {
			out = append(out, DiffLine{'+', l})
		}
		return out
	}
	lcs := make([][]int, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []DiffLine
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			out = append(out, DiffLine{' ', a[i]})
			i, j = i+1, j+1
		case i < len(a) && (j == len(b) || lcs[i+1][j] >= lcs[i][j+1]):
			out = append(out, DiffLine{'-', a[i]})
			i++
		default:
			out = append(out, DiffLine{'+', b[j]})
			j++
		}
	}
	return context(out, 3)
}

// context keeps the changed lines and n shared lines around each; a run of
// left-out lines becomes one "…". No changed line: nothing.
func context(diff []DiffLine, n int) []DiffLine {
	if !slices.ContainsFunc(diff, func(l DiffLine) bool { return l.Op != ' ' }) {
		return nil
	}
	keep := make([]bool, len(diff))
	for i, l := range diff {
		if l.Op != ' ' {
			for k := max(0, i-n); k <= min(len(diff)-1, i+n); k++ {
				keep[k] = true
			}
		}
	}
	var out []DiffLine
	for i, l := range diff {
		switch {
		case keep[i]:
			out = append(out, l)
		case i == 0 || keep[i-1]:
			out = append(out, DiffLine{' ', "…"})
		}
	}
	return out
}

func lines(def json.RawMessage) []string {
	if len(def) == 0 || string(def) == "null" {
		return nil
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, def, "", "  "); err != nil {
		return strings.Split(string(def), "\n")
	}
	return strings.Split(buf.String(), "\n")
}
