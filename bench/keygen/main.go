// Command keygen fills a keygate bbolt store with generated keys for the
// load benchmarks (bench/*.sh, docs/BENCHMARKS.md), through the store
// package's own write path (storetest.BulkCreate: the records Create
// writes), and writes each key's secret, one a line, to a file the load
// generator reads.
//
//	keygen -db /tmp/kg/keygate.db -secrets /tmp/kg/secrets.txt [-n 10000]
//	       [-cidrs 10] [-scopes payment:read,payment:write] [-per-workspace 100] [-mode LIVE] [-cpuprofile F]
//
// THE SECRETS FILE HOLDS LIVE CREDENTIALS for every generated key, in plain
// text (mode 0600). It exists only for benchmarks: never generate keys with
// this tool into a store that serves real traffic, and delete the file (the
// scripts use a temporary directory) when done.
//
// Every key has the given scopes and a whitelist of -cidrs CIDRs
// (10.0.0.0/16, 10.1.0.0/16, …; the benchmarks verify from 10.<cidrs-1>.200.1,
// the last entry, so the IP check scans the whole list). Keys are spread
// over workspaces of -per-workspace keys each (bench-ws-000000, …).
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/keygate/keygate/internal/apikey"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/storetest"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "keygen:", err)
		os.Exit(1)
	}
}

type options struct {
	db, secrets, scopes string
	cpuprofile          string
	n, cidrs, perWS     int
	mode                apikey.Mode
}

func parse(args []string, out io.Writer) (options, error) {
	var o options
	var mode string
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.db, "db", "", "bbolt file to create (must not exist)")
	fs.StringVar(&o.secrets, "secrets", "", "file to write the secrets to, one a line (must not exist; holds credentials: benchmarks only)")
	fs.IntVar(&o.n, "n", 10_000, "number of keys")
	fs.IntVar(&o.cidrs, "cidrs", 10, "CIDR entries in every key's IP whitelist (0-100)")
	fs.StringVar(&o.scopes, "scopes", "payment:read,payment:write", "comma-separated scopes of every key")
	fs.IntVar(&o.perWS, "per-workspace", 100, "keys per workspace")
	fs.StringVar(&mode, "mode", "LIVE", "LIVE or TEST")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile to this file")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var errs []error
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	if o.db == "" || o.secrets == "" {
		errs = append(errs, errors.New("-db and -secrets are required"))
	}
	if o.n < 1 {
		errs = append(errs, errors.New("-n must be at least 1"))
	}
	if o.cidrs < 0 || o.cidrs > 100 {
		errs = append(errs, errors.New("-cidrs must be 0-100"))
	}
	if o.perWS < 1 {
		errs = append(errs, errors.New("-per-workspace must be at least 1"))
	}
	var ok bool
	if o.mode, ok = apikey.ParseMode(strings.ToUpper(mode)); !ok {
		errs = append(errs, errors.New("-mode must be LIVE or TEST"))
	}
	for _, s := range strings.Split(o.scopes, ",") {
		if !apikey.ValidScope(s) {
			errs = append(errs, fmt.Errorf("-scopes: %q is not a valid scope code", s))
		}
	}
	return o, errors.Join(errs...)
}

// chunk is one BulkCreate call's worth of keys and their secrets.
type chunk struct {
	keys    []storetest.BulkKey
	secrets []string
}

const chunkSize = 20_000

func run(args []string, log io.Writer) error {
	o, err := parse(args, log)
	if err != nil {
		return err
	}
	if _, err := os.Stat(o.db); err == nil {
		return fmt.Errorf("%s exists: keygen only creates new stores", o.db)
	}
	sf, err := os.OpenFile(o.secrets, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer sf.Close()
	db, err := store.OpenBolt(o.db, store.BoltOptions{})
	if err != nil {
		return err
	}
	defer db.Close()

	if o.cpuprofile != "" {
		pf, err := os.Create(o.cpuprofile)
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	start := time.Now()
	ips := make([]string, o.cidrs)
	for i := range ips {
		ips[i] = fmt.Sprintf("10.%d.0.0/16", i)
	}
	scopes := strings.Split(o.scopes, ",")
	now := time.Now().Unix()

	// Keys are stored in the order of their secret hashes, with ids handed
	// out in sorted order: every bucket is then appended to, which makes a
	// million keys a matter of seconds (BulkCreate's doc).
	secrets, ids := newSecrets(o.mode, o.n), newIDs(o.mode, o.n)

	// Builders (one per CPU) turn chunks into records while the writer
	// commits the previous ones.
	nChunks := (o.n + chunkSize - 1) / chunkSize
	ready := make([]chan chunk, nChunks)
	for i := range ready {
		ready[i] = make(chan chunk, 1)
	}
	var wg sync.WaitGroup
	workers := runtime.NumCPU()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := w; c < nChunks; c += workers {
				lo, hi := c*chunkSize, min((c+1)*chunkSize, o.n)
				ready[c] <- build(o, lo, secrets[lo:hi], ids[lo:hi], ips, scopes, now)
			}
		}()
	}
	defer wg.Wait()
	bw := bufio.NewWriterSize(sf, 1<<20)
	written := 0
	for c := range nChunks {
		ch := <-ready[c]
		if err := storetest.BulkCreate(context.Background(), db, ch.keys); err != nil {
			drain(ready[c+1:])
			return fmt.Errorf("%d keys written before: %w", written, err)
		}
		for _, s := range ch.secrets {
			bw.WriteString(s)
			bw.WriteByte('\n')
		}
		written += len(ch.keys)
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := sf.Sync(); err != nil {
		return err
	}
	if err := db.Close(); err != nil {
		return err
	}
	fi, _ := os.Stat(o.db)
	fmt.Fprintf(log, "keygen: %d keys in %s (%.1fs, db %.1f MiB); secrets in %s (benchmark credentials: delete after use)\n",
		written, o.db, time.Since(start).Seconds(), float64(fi.Size())/(1<<20), o.secrets)
	return nil
}

func drain(rest []chan chunk) {
	for _, c := range rest {
		<-c
	}
}

type secret struct {
	plain string
	hash  [32]byte
}

// parallel runs fn over [0, n) split among the CPUs.
func parallel(n int, fn func(lo, hi int)) {
	var wg sync.WaitGroup
	w := runtime.NumCPU()
	for i := range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(n*i/w, n*(i+1)/w)
		}()
	}
	wg.Wait()
}

// newSecrets returns n fresh secrets sorted by hash.
func newSecrets(m apikey.Mode, n int) []secret {
	out := make([]secret, n)
	parallel(n, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			p := apikey.NewSecret(m).Reveal()
			out[i] = secret{p, apikey.Hash(p)}
		}
	})
	slices.SortFunc(out, func(a, b secret) int { return bytes.Compare(a.hash[:], b.hash[:]) })
	return out
}

// newIDs returns n fresh key ids, sorted.
func newIDs(m apikey.Mode, n int) []string {
	out := make([]string, n)
	parallel(n, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			out[i] = apikey.NewID(m)
		}
	})
	slices.Sort(out)
	return out
}

// build makes the records of keys first, first+1, … (a repeated id or hash
// — odds of about 2^-60 at a million keys — fails the load with
// store.ErrConflict).
func build(o options, first int, secrets []secret, ids []string, ips, scopes []string, now int64) chunk {
	ch := chunk{keys: make([]storetest.BulkKey, len(secrets)), secrets: make([]string, len(secrets))}
	for i, sec := range secrets {
		ch.secrets[i] = sec.plain
		ch.keys[i] = storetest.BulkKey{
			Key: &store.Key{ID: ids[i], WorkspaceID: fmt.Sprintf("bench-ws-%06d", (first+i)/o.perWS), Name: fmt.Sprintf("bench key %d", first+i),
				Mode: o.mode, Scopes: scopes, IPWhitelist: ips, CreatedAt: now, SecretHint: apikey.Hint(sec.plain)},
			SecretHash: sec.hash,
			Event: store.Event{EventID: "evt_" + apikey.NewID(apikey.Live)[len("sk_live_"):], Action: store.ActionCreated,
				Actor: store.Actor{Admin: true}, RequestID: "keygen"},
		}
	}
	return ch
}
