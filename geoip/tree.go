package geoip

import (
	"encoding/binary"
	"fmt"

	"github.com/oschwald/maxminddb-golang/v2"
)

// checkTree refuses a search tree in which a node is reachable along two
// paths, other than the IPv4 subtree that IPv6 databases alias on purpose
// (::ffff:0:0/96, 2001::/32, 2002::/16). The library's verifier accepts
// such sharing, but walking every network of a file built that way takes
// time exponential in its depth: a corrupt or crafted file would stall a
// reload, or the server's start, for ever. One pass over the nodes tells.
func checkTree(data []byte, md maxminddb.Metadata) error {
	nodes := md.NodeCount
	width := md.RecordSize * 2 / 8 // bytes per node
	if width == 0 || nodes > uint(len(data))/width {
		return fmt.Errorf("corrupt search tree: %d nodes of %d bits do not fit in the file", nodes, md.RecordSize)
	}
	children := func(n uint) (uint, uint) {
		b := data[n*width : n*width+width]
		switch md.RecordSize {
		case 24:
			return uint(b[0])<<16 | uint(b[1])<<8 | uint(b[2]), uint(b[3])<<16 | uint(b[4])<<8 | uint(b[5])
		case 28:
			return uint(b[3]&0xf0)<<20 | uint(b[0])<<16 | uint(b[1])<<8 | uint(b[2]),
				uint(b[3]&0x0f)<<24 | uint(b[4])<<16 | uint(b[5])<<8 | uint(b[6])
		}
		return uint(binary.BigEndian.Uint32(b[:4])), uint(binary.BigEndian.Uint32(b[4:]))
	}
	ipv4Root := nodes // none
	if md.IPVersion == 6 {
		n := uint(0)
		for i := 0; i < 96 && n < nodes; i++ {
			n, _ = children(n)
		}
		ipv4Root = n
	}
	seen := make([]bool, nodes)
	stack := []uint{0}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[n] {
			if n == ipv4Root {
				continue
			}
			return fmt.Errorf("corrupt search tree: node %d is reached along two paths", n)
		}
		seen[n] = true
		l, r := children(n)
		for _, c := range [2]uint{l, r} {
			if c < nodes {
				stack = append(stack, c)
			}
		}
	}
	return nil
}
