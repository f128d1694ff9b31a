// Command bench measures what edgeflags adds to Caddy's reverse proxy, on
// loopback with wrk, against stock Caddy doing the same job by hand and
// against nginx (split_clients + geoip2). The figure is the ratio of the
// CPU time two edges spend per request, both loaded at the same time, each
// with one CPU of its own (GOMAXPROCS=1, one nginx worker) and swapping
// CPUs every round; an A/A pair of identical edges shows what the method
// can resolve. See docs/PERFORMANCE.md for the method and a run.
//
//	go run ./bench                       # 9 rounds of 5 s per pair (about 5 minutes)
//	go run ./bench -rounds 3 -duration 2s
//	go run ./bench -go                   # also the Go benchmarks, summarized
//
// It needs wrk, and for the nginx edges nginx with the geoip2 module
// (Debian: apt-get install wrk nginx-light libnginx-mod-http-geoip2).
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"

	"github.com/edgeflags/edgeflags/geoip/geoiptest"
)

var (
	rounds      = flag.Int("rounds", 9, "interleaved rounds")
	duration    = flag.Duration("duration", 5*time.Second, "wrk duration per edge per round")
	connections = flag.Int("connections", 32, "wrk connections")
	runGo       = flag.Bool("go", false, "also run the Go benchmarks of the engine, GeoIP and the handler")
	pin         = flag.Bool("pin", true, "pin the two edges of a pair to CPUs of their own, swapping every round (needs taskset and 2+ CPUs)")
	outDir      = flag.String("out", "bench/out", "where binaries, configs and results go")
)

const flagCount = 20

// edge is one proxy under test.
type edge struct {
	name, what string
	port       int
	start      func(e *edge) *exec.Cmd
	cmd        *exec.Cmd
}

type sample struct {
	cpuPerReq time.Duration
	rps       float64
	p50, p99  time.Duration
	requests  int64
}

func main() {
	flag.Parse()
	log.SetFlags(0)
	if _, err := exec.LookPath("wrk"); err != nil {
		log.Fatal("wrk is not installed: apt-get install wrk")
	}
	run, err := filepath.Abs(filepath.Join(*outDir, "run-"+time.Now().Format("20060102-150405")))
	check(err)
	check(os.MkdirAll(run, 0o755))
	caddy := filepath.Join(run, "caddy")
	log.Printf("building cmd/caddy into %s", caddy)
	sh("go", "build", "-o", caddy, "./cmd/caddy")

	// The inputs: 20 flags of the usual kinds, a GeoIP database, addresses in it.
	nets := geoiptest.Realistic(100_000, 1)
	geo := filepath.Join(run, "geo.mmdb")
	check(geoiptest.Write(geo, geoiptest.MaxMind, nets))
	flags, err := os.ReadFile("testdata/flags/bench-20.yaml") // the flags of the handler benchmark
	check(err)
	check(os.WriteFile(filepath.Join(run, "flags.yaml"), flags, 0o644))
	// The same flags with flag-00's 25 % split a guarded rollout's step:
	// its outcomes are watched and counted by arm, judged every 250 ms.
	guarded := bytes.Replace(flags, []byte("  flag-00:\n    rules: [{split: {on: 25, off: 75}}]\n"),
		[]byte("  flag-00:\n    rollout: {variant: on, steps: [25, 100], step_duration: 24h}\n"), 1)
	if bytes.Equal(guarded, flags) {
		log.Fatal("testdata/flags/bench-20.yaml: flag-00 is no longer a 25 % split; update the guarded edge")
	}
	check(os.WriteFile(filepath.Join(run, "flags-guarded.yaml"), guarded, 0o644))
	check(os.WriteFile(filepath.Join(run, "load.lua"), []byte(wrkScript(nets)), 0o644))

	ports := freePorts(11) // two backends, up to nine edges
	b1, b2 := ports[0], ports[1]
	data := map[string]any{"Run": run, "B1": b1, "B2": b2, "Flags": flagKeys(), "Geo": geo}
	cpus = cpuPair()
	backends := startCmd(run, "backends", caddy, "run", "--config", writeTemplate(run, "backends.caddyfile", backendsCaddyfile, data), "--adapter", "caddyfile")
	defer stop(backends)

	caddyEdge := func(tmpl string) func(e *edge) *exec.Cmd {
		return func(e *edge) *exec.Cmd {
			d := map[string]any{"Port": e.port}
			for k, v := range data {
				d[k] = v
			}
			cfg := writeTemplate(run, e.name+".caddyfile", tmpl, d)
			return startCmd(run, e.name, caddy, "run", "--config", cfg, "--adapter", "caddyfile")
		}
	}
	edges := []*edge{
		{name: "caddy-proxy", what: "1. Caddy reverse_proxy alone", start: caddyEdge(plainCaddyfile)},
		{name: "caddy-proxy-twin", what: "1'. the same, a second process (the A/A pair)", start: caddyEdge(plainCaddyfile)},
		{name: "caddy-edgeflags", what: "2. Caddy + feature_flags (per-flag headers + X-Features, GeoIP, matcher)", start: caddyEdge(edgeflagsCaddyfile)},
		{name: "caddy-edgeflags-dict", what: "2d. the same with headers dictionary (X-Features only)", start: caddyEdge(strings.Replace(edgeflagsCaddyfile, "feature_flags\n", "feature_flags {\n\t\theaders dictionary\n\t}\n", 1))},
		{name: "caddy-edgeflags-guarded", what: "2g. the same as 2, flag-00 a guarded rollout at 25 %", start: caddyEdge(strings.NewReplacer(
			"/flags.yaml", "/flags-guarded.yaml", "/state.json", "/state-guarded.json").Replace(edgeflagsCaddyfile))},
		{name: "caddy-edgeflags-shadow", what: "2s. the same as 2, flag-00's on users (25 %) shadowed to the second backend", start: caddyEdge(strings.Replace(
			edgeflagsCaddyfile, "\tfeature_flags\n", "\tfeature_flags\n\tfeature_shadow flag-00 on {\n\t\tto 127.0.0.1:{{.B2}}\n\t}\n", 1))},
		{name: "caddy-stock", what: "3. stock Caddy by hand (map per flag, request_header per flag, vars matcher)", start: caddyEdge(stockCaddyfile)},
	}
	if nginxModule := findNginxGeoIP2(); nginxModule != "" {
		nginxEdge := func(tmpl string) func(e *edge) *exec.Cmd {
			return func(e *edge) *exec.Cmd {
				d := map[string]any{"Port": e.port, "Module": nginxModule, "Name": e.name, "Workers": 1} // as Caddy's GOMAXPROCS
				for k, v := range data {
					d[k] = v
				}
				cfg := writeTemplate(run, e.name+".conf", tmpl, d)
				return startCmd(run, e.name, "nginx", "-c", cfg, "-g", "daemon off;")
			}
		}
		edges = append(edges,
			&edge{name: "nginx-proxy", what: "4. nginx proxy_pass alone", start: nginxEdge(nginxPlain)},
			&edge{name: "nginx-split", what: "4s. nginx split_clients on the cookie + geoip2 + headers", start: nginxEdge(nginxSplit)})
	} else {
		log.Print("nginx with the geoip2 module not found: skipping the nginx edges (apt-get install nginx-light libnginx-mod-http-geoip2)")
	}
	for i, e := range edges {
		e.port = ports[2+i]
		e.cmd = e.start(e)
		defer stop(e.cmd)
	}
	for _, p := range append([]int{b1, b2}, portsOf(edges)...) {
		waitPort(p)
	}

	// Warm up, then rounds: every pair once per round, both edges loaded
	// at the same time, each on a CPU of its own, the CPUs swapped every
	// round so that neither edge always has the same one.
	byName := map[string]*edge{}
	for _, e := range edges {
		byName[e.name] = e
		measure(e, run, time.Second)
	}
	var active []pair
	for _, p := range pairs {
		if byName[p.a] != nil && byName[p.b] != nil {
			active = append(active, p)
		}
	}
	results := map[string][]sample{}
	ratios := map[string][]float64{}
	for r := range *rounds {
		for _, p := range active {
			a, b := byName[p.a], byName[p.b]
			cpuA, cpuB := cpus[r%2], cpus[(r+1)%2]
			if cpuA != "" {
				pinTo(a, cpuA)
				pinTo(b, cpuB)
			}
			sa, sb := measurePair(a, b, run, *duration)
			results[a.name] = append(results[a.name], sa)
			results[b.name] = append(results[b.name], sb)
			ratio := float64(sa.cpuPerReq) / float64(sb.cpuPerReq)
			ratios[p.key()] = append(ratios[p.key()], ratio)
			log.Printf("round %d/%d %-22s / %-22s %6.1f / %6.1f µs CPU/req = %.3f", r+1, *rounds, a.name, b.name,
				us(sa.cpuPerReq), us(sb.cpuPerReq), ratio)
		}
	}
	report := summarize(edges, active, results, ratios)
	fmt.Print(report)
	check(os.WriteFile(filepath.Join(run, "results.md"), []byte(report), 0o644))
	log.Printf("results in %s", filepath.Join(run, "results.md"))

	if *runGo {
		fmt.Println("\n## Go benchmarks\n\n```")
		out, _ := exec.Command("go", "test", "-run", "^$", "-bench", ".", "-benchmem", "./rules", "./geoip", "./caddymodule").CombinedOutput()
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "Benchmark") {
				fmt.Println(line)
			}
		}
		fmt.Println("```")
	}
}

// pair is two edges compared: a's CPU per request over b's.
type pair struct{ a, b, what, target string }

func (p pair) key() string { return p.a + "/" + p.b }

var pairs = []pair{
	{"caddy-proxy", "caddy-proxy-twin", "A/A: Caddy's proxy over an identical second one (the method's resolution)", "0.99–1.01"},
	{"caddy-edgeflags", "caddy-proxy", "2 / 1: edgeflags over Caddy's proxy (same 21 headers sent to both)", "≤ 1.04"},
	{"caddy-edgeflags-dict", "caddy-proxy", "2d / 1: dictionary-only edgeflags over Caddy's proxy", ""},
	{"caddy-edgeflags-guarded", "caddy-edgeflags", "2g / 2: one guarded flag over the same flags unguarded", ""},
	{"caddy-edgeflags-shadow", "caddy-edgeflags", "2s / 2: a quarter of the requests shadowed (copy, tee, send, compare) over the same edge", ""},
	{"caddy-edgeflags", "caddy-stock", "2 / 3: edgeflags against stock Caddy by hand", "≤ 0.8"},
	{"nginx-split", "nginx-proxy", "4s / 4: split_clients + geoip2 + headers over nginx's proxy", ""},
	{"caddy-proxy", "nginx-proxy", "1 / 4: Caddy's proxy against nginx's", ""},
}

// measurePair loads a and b at the same time, a wrk each, and returns
// their samples. wrk and the backends float over both CPUs: pinning each
// wrk beside its edge made identical edges read further apart.
func measurePair(a, b *edge, run string, d time.Duration) (sample, sample) {
	done := make(chan sample)
	go func() { done <- measure(b, run, d) }()
	sa := measure(a, run, d)
	return sa, <-done
}

// measure runs wrk against e and returns the edge's CPU time per request.
func measure(e *edge, run string, d time.Duration) sample {
	pids := processTree(e.cmd.Process.Pid)
	before := cpuTime(pids)
	out := sh("wrk", "-t1", "-c"+strconv.Itoa(*connections/2), "-d"+d.String(), "--latency", "-s", filepath.Join(run, "load.lua"),
		fmt.Sprintf("http://127.0.0.1:%d/", e.port))
	used := cpuTime(pids) - before
	s := parseWrk(out)
	if s.requests > 0 {
		s.cpuPerReq = used / time.Duration(s.requests)
	}
	return s
}

// cpuTime is the user + system CPU time of the processes, from /proc.
func cpuTime(pids []int) time.Duration {
	const clkTck = 100 // USER_HZ on Linux
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command (which may hold spaces) in parentheses.
		fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		ut, _ := strconv.ParseInt(fields[11], 10, 64)
		st, _ := strconv.ParseInt(fields[12], 10, 64)
		ticks += ut + st
	}
	return time.Duration(ticks) * time.Second / clkTck
}

// processTree returns pid and its children (nginx's workers).
func processTree(pid int) []int {
	pids := []int{pid}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
		if err != nil {
			continue
		}
		fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		if ppid, _ := strconv.Atoi(fields[1]); ppid == pid {
			pids = append(pids, child)
		}
	}
	return pids
}

func parseWrk(out string) sample {
	var s sample
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 2 && f[0] == "Requests/sec:":
			s.rps, _ = strconv.ParseFloat(f[1], 64)
		case len(f) >= 2 && f[0] == "50.000%" || len(f) >= 2 && f[0] == "50%":
			s.p50 = parseLatency(f[1])
		case len(f) >= 2 && f[0] == "99.000%" || len(f) >= 2 && f[0] == "99%":
			s.p99 = parseLatency(f[1])
		case len(f) >= 5 && f[1] == "requests" && f[2] == "in":
			s.requests, _ = strconv.ParseInt(f[0], 10, 64)
		case strings.HasPrefix(sc.Text(), "  Non-2xx"), strings.HasPrefix(sc.Text(), "  Socket errors"):
			log.Printf("wrk: %s", strings.TrimSpace(sc.Text()))
		}
	}
	return s
}

func parseLatency(s string) time.Duration {
	for _, unit := range []struct {
		suffix string
		d      time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}} {
		if v, ok := strings.CutSuffix(s, unit.suffix); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return time.Duration(f * float64(unit.d))
		}
	}
	return 0
}

// summarize reports the medians, and the ratios per round (each edge's
// rounds are interleaved, so a round's pair shares the machine's state).
func summarize(edges []*edge, active []pair, results map[string][]sample, ratios map[string][]float64) string {
	var b strings.Builder
	host, _ := os.Hostname()
	pinning := "not pinned"
	if cpus[0] != "" {
		pinning = "the two edges of a pair on CPUs " + cpus[0] + " and " + cpus[1] + ", swapped every round"
	}
	fmt.Fprintf(&b, "\n## Results: %d rounds of %s per pair, both loaded at once (wrk -t1 -c%d each), GOMAXPROCS=1, %s, %d CPUs (%s), %s\n\n",
		*rounds, *duration, *connections/2, cpuModel(), nproc(), host, pinning)
	fmt.Fprintln(&b, "| edge | CPU µs/request (median, min–max) | req/s (median) | p50 | p99 |")
	fmt.Fprintln(&b, "| --- | --- | --- | --- | --- |")
	for _, e := range edges {
		s := results[e.name]
		cpu := durations(s, func(x sample) time.Duration { return x.cpuPerReq })
		fmt.Fprintf(&b, "| %s | %.1f (%.1f–%.1f) | %.0f | %s | %s |\n", e.what, us(median(cpu)), us(cpu[0]), us(cpu[len(cpu)-1]),
			medianF(s, func(x sample) float64 { return x.rps }), median(durations(s, func(x sample) time.Duration { return x.p50 })).Round(time.Microsecond),
			median(durations(s, func(x sample) time.Duration { return x.p99 })).Round(time.Microsecond))
	}
	fmt.Fprintln(&b, "\n| ratio of CPU per request, per round | median | min–max | target |")
	fmt.Fprintln(&b, "| --- | --- | --- | --- |")
	for _, p := range active {
		r := slices.Sorted(slices.Values(ratios[p.key()]))
		fmt.Fprintf(&b, "| %s | %.3f | %.3f–%.3f | %s |\n", p.what, r[len(r)/2], r[0], r[len(r)-1], p.target)
	}
	return b.String()
}

func durations(s []sample, f func(sample) time.Duration) []time.Duration {
	out := make([]time.Duration, len(s))
	for i, x := range s {
		out[i] = f(x)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func median(d []time.Duration) time.Duration { return d[len(d)/2] }

func medianF(s []sample, f func(sample) float64) float64 {
	v := make([]float64, len(s))
	for i, x := range s {
		v[i] = f(x)
	}
	sort.Float64s(v)
	return v[len(v)/2]
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func nproc() int {
	out, err := exec.Command("nproc").Output()
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return n
}

func flagKeys() []string {
	keys := make([]string, flagCount)
	for i := range keys {
		keys[i] = fmt.Sprintf("flag-%02d", i)
	}
	return keys
}

// wrkScript sends, per request, one of 1,000 visitors' cookies, a client
// address from the GeoIP database, and the 21 flag headers a spoofing
// client would send — the same to every edge, so that forwarding them is
// not counted against edgeflags (which strips and re-adds them).
func wrkScript(nets []geoiptest.Network) string {
	rng := rand.New(rand.NewPCG(7, 7))
	var ips []string
	for len(ips) < 1000 {
		p := netip.MustParsePrefix(nets[rng.IntN(len(nets))].CIDR)
		if p.Addr().Is4() {
			a := p.Addr().As4()
			a[3] = byte(1 + rng.IntN(250))
			ips = append(ips, netip.AddrFrom4(a).String())
		}
	}
	var b strings.Builder
	b.WriteString("local ips = {")
	for _, ip := range ips {
		fmt.Fprintf(&b, "%q,", ip)
	}
	b.WriteString("}\nlocal headers = {\n")
	var dict []string
	for _, k := range flagKeys() {
		fmt.Fprintf(&b, "  [%q] = \"on\",\n", "X-Feature-"+strings.ToUpper(k[:1])+k[1:4]+"-"+k[5:])
		dict = append(dict, k+"=on")
	}
	fmt.Fprintf(&b, "  [\"X-Features\"] = %q,\n}\n", strings.Join(dict, ", "))
	b.WriteString(`local n = 0
request = function()
  n = n + 1
  local i = n % 1000
  headers["Cookie"] = string.format("session=abc123; ff_uid=visitor%05dxYz0123456789ab", i)
  headers["X-Forwarded-For"] = ips[i + 1]
  headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
  return wrk.format("GET", "/", headers)
end
`)
	return b.String()
}

const globalOptions = `{
	admin off
	persist_config off
	servers {
		trusted_proxies static 127.0.0.1/32
		client_ip_headers X-Forwarded-For
	}
`

var backendsCaddyfile = `{
	admin off
	persist_config off
}
http://127.0.0.1:{{.B1}} {
	respond "old" 200
}
http://127.0.0.1:{{.B2}} {
	respond "new" 200
}
`

// upstream is every Caddy edge's proxy transport: a keep-alive pool large
// enough for wrk's connections, so that no edge opens upstream connections
// during a run (an edge with one upstream would otherwise churn more than
// one with two).
const upstream = ` {
		transport http {
			keepalive_idle_conns_per_host 256
		}
	}`

var plainCaddyfile = globalOptions + `}
http://127.0.0.1:{{.Port}} {
	reverse_proxy 127.0.0.1:{{.B1}}` + upstream + `
}
`

var edgeflagsCaddyfile = globalOptions + `	feature_flags {
		flags_file {{.Run}}/flags.yaml
		geoip {{.Geo}}
		state_file {{.Run}}/state.json
	}
}
http://127.0.0.1:{{.Port}} {
	feature_flags
	@new feature flag-00 on
	reverse_proxy @new 127.0.0.1:{{.B2}}` + upstream + `
	reverse_proxy 127.0.0.1:{{.B1}}` + upstream + `
}
`

// stockCaddyfile does the job with Caddy's own directives: a map per flag
// on the cookie (a regexp on its last character stands in for a
// percentage), request_header per flag, a vars matcher. Stock Caddy has no
// GeoIP: the country flags map a header instead.
var stockCaddyfile = globalOptions + `}
http://127.0.0.1:{{.Port}} {
	request_header -X-Feature-*
	request_header -X-Features
{{- range $i, $k := .Flags}}
	map {cookie.ff_uid} {{"{"}}{{$k}}{{"}"}} {
		~[0-3]$ on
		default off
	}
	request_header X-Feature-{{$k}} {{"{"}}{{$k}}{{"}"}}
{{- end}}
	request_header X-Features "{{range $i, $k := .Flags}}{{if $i}}, {{end}}{{$k}}={{"{"}}{{$k}}{{"}"}}{{end}}"
	@new vars {flag-00} on
	reverse_proxy @new 127.0.0.1:{{.B2}}` + upstream + `
	reverse_proxy 127.0.0.1:{{.B1}}` + upstream + `
}
`

var nginxHead = `load_module {{.Module}};
user root;
worker_processes {{.Workers}};
pid {{.Run}}/{{.Name}}.pid;
error_log {{.Run}}/{{.Name}}.error.log warn;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path {{.Run}}/{{.Name}}-tmp;
	proxy_temp_path {{.Run}}/{{.Name}}-tmp;
	fastcgi_temp_path {{.Run}}/{{.Name}}-tmp;
	uwsgi_temp_path {{.Run}}/{{.Name}}-tmp;
	scgi_temp_path {{.Run}}/{{.Name}}-tmp;
	upstream old { server 127.0.0.1:{{.B1}}; keepalive 256; }
	upstream new { server 127.0.0.1:{{.B2}}; keepalive 256; }
	set_real_ip_from 127.0.0.1;
	real_ip_header X-Forwarded-For;
`

var nginxPlain = nginxHead + `	server {
		listen 127.0.0.1:{{.Port}};
		location / {
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_pass http://old;
		}
	}
}
`

// nginxSplit: split_clients on the cookie per flag, geoip2 for the country
// flags, a header per flag and X-Features, the first flag routing.
var nginxSplit = nginxHead + `	geoip2 {{.Geo}} {
		$geoip2_country country iso_code;
	}
{{- range $i, $k := .Flags}}
	split_clients "${cookie_ff_uid}{{$k}}" ${{$k | under}} {
		25% on;
		* off;
	}
{{- end}}
	map $geoip2_country $country_on {
		DE on;
		AT on;
		CH on;
		default off;
	}
	map $flag_00 $backend {
		on new;
		default old;
	}
	server {
		listen 127.0.0.1:{{.Port}};
		location / {
			proxy_http_version 1.1;
			proxy_set_header Connection "";
{{- range $i, $k := .Flags}}
			proxy_set_header X-Feature-{{$k}} ${{$k | under}};
{{- end}}
			proxy_set_header X-Features "{{range $i, $k := .Flags}}{{if $i}}, {{end}}{{$k}}=${{$k | under}}{{end}}";
			proxy_set_header X-Country $country_on;
			proxy_pass http://$backend;
		}
	}
}
`

func writeTemplate(dir, name, tmpl string, data any) string {
	t := template.Must(template.New(name).Funcs(template.FuncMap{"under": func(s string) string { return strings.ReplaceAll(s, "-", "_") }}).Parse(tmpl))
	var b bytes.Buffer
	check(t.Execute(&b, data))
	path := filepath.Join(dir, name)
	check(os.WriteFile(path, b.Bytes(), 0o644))
	if strings.HasSuffix(name, ".conf") {
		check(os.MkdirAll(filepath.Join(dir, strings.TrimSuffix(name, ".conf")+"-tmp"), 0o755))
	}
	return path
}

func findNginxGeoIP2() string {
	if _, err := exec.LookPath("nginx"); err != nil {
		return ""
	}
	for _, p := range []string{"/usr/lib/nginx/modules/ngx_http_geoip2_module.so", "/usr/share/nginx/modules/ngx_http_geoip2_module.so"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// cpus are the two CPUs a pair's edges run on; "" when not pinning.
var cpus [2]string

// cpuPair picks the last two CPUs, when pinning.
func cpuPair() [2]string {
	n := nproc()
	if _, err := exec.LookPath("taskset"); !*pin || err != nil || n < 2 {
		return [2]string{}
	}
	return [2]string{strconv.Itoa(n - 2), strconv.Itoa(n - 1)}
}

// pinTo moves every thread of e's processes to cpu.
func pinTo(e *edge, cpu string) {
	for _, pid := range processTree(e.cmd.Process.Pid) {
		sh("taskset", "-a", "-p", "-c", cpu, strconv.Itoa(pid))
	}
}

func startCmd(dir, name, bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	check(err)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	if name != "backends" {
		cmd.Env = append(cmd.Env, "GOMAXPROCS=1") // an edge has one CPU
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	check(cmd.Start())
	return cmd
}

func stop(cmd *exec.Cmd) {
	if cmd != nil && cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		cmd.Wait()
	}
}

func portsOf(edges []*edge) []int {
	var out []int
	for _, e := range edges {
		out = append(out, e.port)
	}
	return out
}

func freePorts(n int) []int {
	var ls []net.Listener
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		check(err)
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

func waitPort(port int) {
	for range 200 {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	log.Fatalf("nothing listens on port %d: see the logs in %s", port, *outDir)
}

func sh(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		log.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
