// Command revoke measures revoke → first denial at the gateway (bench/revoke.sh).
//
// For each trial it creates a key on the revoking sidecar, has the gateway
// allow it (so the gateway holds its facts: only a push can make it deny
// before cache_ttl_ms has passed), then polls the gateway with that key
// from a goroutine of its own, back to back, while it sends the revoke; the
// trial's figure is the time from sending the revoke to receiving the
// gateway's first 401, and from the revoke's answer (the contract's
// measure: a revoke acknowledged by a sidecar; 0 when the denial came
// first, as it may: the sidecar pushes before it answers). It prints p50,
// p90, p99 and max of both, and fails when a trial sees no denial within
// -timeout.
//
// The revoke goes to -revoke-sidecar and the polling to -gateway, which may
// use another sidecar (two nodes on one PostgreSQL database).
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "revoke:", err)
		os.Exit(1)
	}
}

func run() error {
	gateway := flag.String("gateway", "", "gateway base URL (required)")
	path := flag.String("path", "/orders/42", "enforced path on the gateway")
	sidecar := flag.String("revoke-sidecar", "", "sidecar base URL the keys are created and revoked on (required)")
	ws := flag.String("workspace", "bench-revoke", "workspace of the keys")
	scope := flag.String("scope", "payment:read", "scope the route requires")
	trials := flag.Int("n", 200, "trials")
	timeout := flag.Duration("timeout", 2*time.Second, "a trial fails without a denial within this")
	warm := flag.Duration("settle", 50*time.Millisecond, "wait between the gateway's first allow and the revoke")
	label := flag.String("label", "", "label of the printed line")
	flag.Parse()
	admin := os.Getenv("KEYGATE_ADMIN_TOKEN")
	if *gateway == "" || *sidecar == "" || admin == "" {
		return errors.New("-gateway, -revoke-sidecar and $KEYGATE_ADMIN_TOKEN are required")
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	get := func(secret string) (int, error) {
		req, _ := http.NewRequest("GET", *gateway+*path, nil)
		req.Header.Set("X-API-Key", secret)
		res, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode, nil
	}
	var lat, fromAck []time.Duration
	for i := range *trials {
		id, secret, err := create(c, *sidecar, *ws, *scope, admin)
		if err != nil {
			return err
		}
		if st, err := get(secret); err != nil || st != 200 {
			return fmt.Errorf("trial %d: new key answered %d %v at the gateway", i, st, err)
		}
		time.Sleep(*warm)
		if st, err := get(secret); err != nil || st != 200 {
			return fmt.Errorf("trial %d: key answered %d %v before the revoke", i, st, err)
		}
		start := make(chan time.Time)
		denied := make(chan error, 1)
		var at time.Time
		go func() {
			t0 := <-start
			for {
				st, err := get(secret)
				if err != nil {
					denied <- err
					return
				}
				if st == 401 {
					at = time.Now()
					denied <- nil
					return
				}
				if st != 200 {
					denied <- fmt.Errorf("gateway answered %d", st)
					return
				}
				if time.Since(t0) > *timeout {
					denied <- fmt.Errorf("still allowed %s after the revoke", time.Since(t0))
					return
				}
			}
		}()
		t0 := time.Now()
		start <- t0
		if err := revoke(c, *sidecar, *ws, id, admin); err != nil {
			return err
		}
		acked := time.Now()
		if err := <-denied; err != nil {
			return fmt.Errorf("trial %d: %w", i, err)
		}
		lat = append(lat, at.Sub(t0))
		fromAck = append(fromAck, max(0, at.Sub(acked)))
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
	for _, m := range []struct {
		what string
		l    []time.Duration
	}{{"revoke answered → first denial", fromAck}, {"revoke sent → first denial", lat}} {
		l := m.l
		slices.Sort(l)
		q := func(p float64) time.Duration { return l[min(len(l)-1, int(p*float64(len(l))))] }
		fmt.Printf("%s %s, %d trials: p50 %s · p90 %s · p99 %s · max %s\n", *label, m.what, len(l), ms(q(0.50)), ms(q(0.90)), ms(q(0.99)), ms(l[len(l)-1]))
	}
	return nil
}

func create(c *http.Client, sidecar, ws, scope, admin string) (id, secret string, err error) {
	body, _ := json.Marshal(map[string]any{"name": "revoke-bench", "scopes": []string{scope}})
	req, _ := http.NewRequest("POST", sidecar+"/web/v1/workspaces/"+ws+"/api-keys", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+admin)
	req.Header.Set("Content-Type", "application/json")
	res, err := c.Do(req)
	if err != nil {
		return "", "", err
	}
	defer res.Body.Close()
	var env struct {
		Data struct {
			ID     string `json:"apiKeyId"`
			Secret string `json:"secret"`
		} `json:"data"`
	}
	if err := json.NewDecoder(res.Body).Decode(&env); err != nil || res.StatusCode != 201 {
		return "", "", fmt.Errorf("create: %d %v", res.StatusCode, err)
	}
	return env.Data.ID, env.Data.Secret, nil
}

func revoke(c *http.Client, sidecar, ws, id, admin string) error {
	req, _ := http.NewRequest("DELETE", sidecar+"/web/v1/workspaces/"+ws+"/api-keys/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	res, err := c.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		return fmt.Errorf("revoke: %d", res.StatusCode)
	}
	return nil
}
