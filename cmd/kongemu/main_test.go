package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		wantErr string
		check   func(t *testing.T, listen, header string, trusted int, recursive, expose bool, timeout time.Duration)
	}{
		{
			name: "defaults",
			args: []string{"--plugin", "/bin/keygate"},
			check: func(t *testing.T, listen, header string, trusted int, recursive, expose bool, timeout time.Duration) {
				if listen != "127.0.0.1:8000" || header != "X-Forwarded-For" || trusted != 0 || recursive || expose || timeout != 0 {
					t.Errorf("got %s %s %d %v %v %v", listen, header, trusted, recursive, expose, timeout)
				}
			},
		},
		{
			name: "everything",
			args: []string{"--plugin", "k", "--config", "c.yml", "--listen", ":9000", "--trusted-ips", "10.0.0.0/8, ::1",
				"--real-ip-header", "X-Real-IP", "--real-ip-recursive", "--expose-pdk-calls", "--event-timeout", "2s"},
			check: func(t *testing.T, listen, header string, trusted int, recursive, expose bool, timeout time.Duration) {
				if listen != ":9000" || header != "X-Real-IP" || trusted != 2 || !recursive || !expose || timeout != 2*time.Second {
					t.Errorf("got %s %s %d %v %v %v", listen, header, trusted, recursive, expose, timeout)
				}
			},
		},
		{name: "missing plugin", args: nil, wantErr: "--plugin is required"},
		{name: "bad trusted ips", args: []string{"--plugin", "k", "--trusted-ips", "nope"}, wantErr: "--trusted-ips"},
		{name: "stray argument", args: []string{"--plugin", "k", "extra"}, wantErr: "unexpected arguments"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _, err := parseFlags(tc.args, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, cfg.Listen, cfg.RealIPHeader, len(cfg.TrustedIPs), cfg.RealIPRecursive, cfg.ExposePDKCalls, cfg.EventTimeout)
		})
	}
}
