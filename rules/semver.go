package rules

import "strings"

// semver is a parsed semantic version (semver.org 2.0). It keeps slices of
// the input rather than copies, so parsing a request value allocates nothing.
type semver struct {
	major, minor, patch uint64
	pre                 string // dot-separated pre-release identifiers, "" for a release
}

// parseSemver accepts MAJOR.MINOR.PATCH with an optional leading v, optional
// -prerelease and +build (ignored). Missing minor or patch count as 0
// ("2" = "2.0.0"), as app versions in headers are often written short.
func parseSemver(s string) (semver, bool) {
	var v semver
	s = strings.TrimPrefix(s, "v")
	if i := strings.IndexByte(s, '+'); i >= 0 {
		s = s[:i]
	}
	if i := strings.IndexByte(s, '-'); i >= 0 {
		v.pre = s[i+1:]
		if v.pre == "" {
			return v, false
		}
		s = s[:i]
	}
	nums := [3]*uint64{&v.major, &v.minor, &v.patch}
	for i := 0; i < 3; i++ {
		part, rest, more := strings.Cut(s, ".")
		n, ok := parseUint(part)
		if !ok {
			return v, false
		}
		*nums[i] = n
		s = rest
		if !more {
			return v, true
		}
	}
	return v, false // a fourth component
}

func parseUint(s string) (uint64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}

// compare returns -1, 0 or +1 as a is lower than, equal to or higher than b.
func (a semver) compare(b semver) int {
	for _, d := range [3][2]uint64{{a.major, b.major}, {a.minor, b.minor}, {a.patch, b.patch}} {
		if d[0] != d[1] {
			if d[0] < d[1] {
				return -1
			}
			return 1
		}
	}
	switch {
	case a.pre == b.pre:
		return 0
	case a.pre == "": // a release ranks above its pre-releases
		return 1
	case b.pre == "":
		return -1
	}
	return comparePrerelease(a.pre, b.pre)
}

func comparePrerelease(a, b string) int {
	for a != "" && b != "" {
		var x, y string
		x, a, _ = strings.Cut(a, ".")
		y, b, _ = strings.Cut(b, ".")
		xn, xnum := parseUint(x)
		yn, ynum := parseUint(y)
		switch {
		case xnum && ynum:
			if xn != yn {
				if xn < yn {
					return -1
				}
				return 1
			}
		case xnum: // numeric identifiers rank below alphanumeric ones
			return -1
		case ynum:
			return 1
		default:
			if c := strings.Compare(x, y); c != 0 {
				return c
			}
		}
	}
	switch {
	case a == "" && b == "":
		return 0
	case a == "":
		return -1
	}
	return 1
}
