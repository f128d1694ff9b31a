package geoip

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/oschwald/maxminddb-golang/v2"
)

// checkTree checks every node of the search tree in one pass: that the
// tree fits in the file, that every record points at a node, at "no data",
// or into the data section, that no path is longer than 128 bits, and that
// no node is reachable along two paths — other than the IPv4 subtree that
// IPv6 databases alias on purpose (::ffff:0:0/96, 2001::/32, 2002::/16).
// The library's verifier accepts such sharing, but walking every network
// of a file built that way takes time exponential in its depth: a corrupt
// or crafted file would stall a reload, or the server's start, for ever.
func checkTree(data []byte, md maxminddb.Metadata) error {
	nodes := md.NodeCount
	width := md.RecordSize * 2 / 8 // bytes per node
	if width == 0 || nodes > uint(len(data))/width {
		return fmt.Errorf("%d nodes of %d bits do not fit in the file", nodes, md.RecordSize)
	}
	// The data section runs from after the tree and its 16-byte
	// separator to the metadata marker.
	marker := bytes.LastIndex(data, metadataMarker)
	dataStart := nodes*width + 16
	if marker < 0 || uint(marker) < dataStart {
		return errors.New("the data section is missing: the file ends inside the search tree")
	}
	dataLen := uint(marker) - dataStart
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
	type visit struct{ node, depth uint }
	seen := make([]bool, nodes)
	stack := []visit{{0, 0}}
	for len(stack) > 0 {
		v := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[v.node] {
			if v.node == ipv4Root {
				continue
			}
			return fmt.Errorf("node %d is reached along two paths", v.node)
		}
		seen[v.node] = true
		if v.depth >= 128 {
			return fmt.Errorf("a path of the search tree is longer than 128 bits (node %d)", v.node)
		}
		l, r := children(v.node)
		for _, c := range [2]uint{l, r} {
			switch {
			case c < nodes:
				stack = append(stack, visit{c, v.depth + 1})
			case c == nodes: // no data
			case c-nodes-16 >= dataLen: // c > nodes: a pointer into the data section
				return fmt.Errorf("node %d points past the data section (record %d, %d bytes of data)", v.node, c, dataLen)
			}
		}
	}
	return nil
}

// metadataMarker starts the metadata section, at the end of every file.
var metadataMarker = []byte("\xAB\xCD\xEFMaxMind.com")
