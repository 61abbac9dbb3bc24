// peer_go.go - Go's two natural "pools" as peers (issue #4).
//
//	peer_go goroutine|chanpool ff|future|roundtrip N
//
// goroutine: one `go` statement per task; the runtime's scheduler is the
// pool (GOMAXPROCS = 2 on this machine, so at most 2 run at once, the
// submitter included). chanpool: 2 worker goroutines reading func()s from a
// channel with a 1024-slot buffer (a bounded queue, as a real pool has),
// closed to drain. Go has no futures; the idiom is a result channel per
// task, which is what the future and roundtrip cases use. Only the
// standard library: this builds offline with `go build peer_go.go`.
package main

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"
)

type pool interface {
	submit(f func())
	close() // returns once every submitted task has run
}

type goPool struct{ wg sync.WaitGroup }

func (p *goPool) submit(f func()) {
	p.wg.Add(1)
	go func() { f(); p.wg.Done() }()
}
func (p *goPool) close() { p.wg.Wait() }

type chanPool struct {
	jobs chan func()
	wg   sync.WaitGroup
}

func newChanPool() *chanPool {
	p := &chanPool{jobs: make(chan func(), 1024)}
	p.wg.Add(2)
	for i := 0; i < 2; i++ {
		go func() {
			for f := range p.jobs {
				f()
			}
			p.wg.Done()
		}()
	}
	return p
}
func (p *chanPool) submit(f func()) { p.jobs <- f }
func (p *chanPool) close()          { close(p.jobs); p.wg.Wait() }

func newPool(kind string) pool {
	if kind == "goroutine" {
		return &goPool{}
	}
	return newChanPool()
}

func noop() {}

func throughput(kind string, future bool, n int) float64 {
	t0 := time.Now() // monotonic clock reading
	p := newPool(kind)
	if future {
		chs := make([]chan struct{}, n)
		for i := range chs {
			ch := make(chan struct{}, 1)
			chs[i] = ch
			p.submit(func() { ch <- struct{}{} })
		}
		for _, ch := range chs {
			<-ch
		}
	} else {
		for i := 0; i < n; i++ {
			p.submit(noop)
		}
	}
	p.close()
	return float64(n) / time.Since(t0).Seconds()
}

// Nearest-rank percentile, as in peer_common.h.
func pct(s []int64, p int) int64 {
	k := (len(s)*p + 99) / 100
	if k < 1 {
		k = 1
	}
	return s[k-1]
}

func roundtrips(kind string, n int) []int64 {
	p := newPool(kind)
	s := make([]int64, n)
	for i := -200; i < n; i++ { // 200 untimed, as in peer_common.h
		t0 := time.Now()
		ch := make(chan struct{}, 1)
		p.submit(func() { ch <- struct{}{} })
		<-ch
		if i >= 0 {
			s[i] = int64(time.Since(t0))
		}
	}
	p.close()
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s
}

func main() {
	n := 0
	if len(os.Args) == 4 {
		n, _ = strconv.Atoi(os.Args[3])
	}
	kind := ""
	if len(os.Args) > 1 {
		kind = os.Args[1]
	}
	if n <= 0 || (kind != "goroutine" && kind != "chanpool") {
		fmt.Fprintln(os.Stderr, "usage: peer_go goroutine|chanpool ff|future|roundtrip <n>")
		os.Exit(2)
	}
	switch os.Args[2] {
	case "ff", "future":
		fmt.Printf("tasks_per_s=%.1f\n", throughput(kind, os.Args[2] == "future", n))
	case "roundtrip":
		s := roundtrips(kind, n)
		fmt.Printf("p50_ns=%d p99_ns=%d\n", pct(s, 50), pct(s, 99))
	default:
		fmt.Fprintln(os.Stderr, "peer_go: unknown case", os.Args[2])
		os.Exit(2)
	}
}
