package sidecar

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// certCheckEvery is how often a TLS handshake looks whether the certificate
// or key file changed (at most one pair of stat calls per this interval).
const certCheckEvery = time.Second

// certReloader serves the certificate of a cert/key file pair and loads it
// again when either file changes (seen at the next handshake at most
// certCheckEvery after the change) or on Reload (SIGHUP). A pair that does
// not load — a half-written file, a key that does not match — is logged
// and the previous certificate kept; the files are tried again at the next
// check.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	cert atomic.Pointer[tls.Certificate]

	mu        sync.Mutex
	lastCheck time.Time
	stamp     [2]fileStamp // of the files last loaded
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi.ModTime(), fi.Size()}, nil
}

// load reads the pair; r.mu is held or r is not shared yet.
func (r *certReloader) load() error {
	cs, err1 := stampOf(r.certFile)
	ks, err2 := stampOf(r.keyFile)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("TLS certificate: %w", err)
	}
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		// The error names the files, never their content.
		return fmt.Errorf("TLS certificate %s / key %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert.Store(&c)
	r.stamp = [2]fileStamp{cs, ks}
	return nil
}

// Reload loads the pair now; on failure the previous certificate stays.
func (r *certReloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastCheck = time.Now()
	if err := r.load(); err != nil {
		r.log.Error("TLS certificate not reloaded; serving the previous one", "err", err)
		return err
	}
	r.log.Info("TLS certificate loaded", "cert", r.certFile)
	return nil
}

// getCertificate is tls.Config.GetCertificate: the current certificate,
// reloaded first when a file changed since it was loaded.
func (r *certReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	now := time.Now()
	r.mu.Lock()
	if now.Sub(r.lastCheck) >= certCheckEvery {
		r.lastCheck = now
		cs, err1 := stampOf(r.certFile)
		ks, err2 := stampOf(r.keyFile)
		if err1 == nil && err2 == nil && [2]fileStamp{cs, ks} != r.stamp {
			if err := r.load(); err != nil {
				r.log.Error("TLS certificate changed but does not load; serving the previous one", "err", err)
			} else {
				r.log.Info("TLS certificate reloaded", "cert", r.certFile)
			}
		}
	}
	r.mu.Unlock()
	return r.cert.Load(), nil
}

// serverTLS is the TLS configuration of the API listener.
func (r *certReloader) serverTLS() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.getCertificate,
		NextProtos:     []string{"http/1.1"},
	}
}
