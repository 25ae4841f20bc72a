// Package buildinfo is the version keygate's binaries report (--version).
//
// `make build` stamps it from `git describe --tags --always --dirty`:
//
//	go build -ldflags "-X github.com/keygate/keygate/internal/buildinfo.version=$(git describe --tags --always --dirty)"
//
// Without the stamp, a binary built by `go build` inside the repository
// reports the commit the go command recorded (vcs.revision, with "-dirty"
// when the tree had changes); `go run` and builds outside a checkout record
// none and report "devel".
package buildinfo

import "runtime/debug"

// version is set with -ldflags -X by make build; empty otherwise.
var version string

// Version is this binary's version.
func Version() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	return fromSettings(bi.Settings)
}

// fromSettings reads the VCS stamp of the build settings.
func fromSettings(settings []debug.BuildSetting) string {
	var rev string
	var dirty bool
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}
