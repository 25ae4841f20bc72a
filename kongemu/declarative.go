package kongemu

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"go.yaml.in/yaml/v3"
)

// Declarative is the subset of Kong's declarative configuration
// (_format_version "3.0") that kongemu understands. Unknown keys are errors.
type Declarative struct {
	FormatVersion string    `yaml:"_format_version"`
	Transform     *bool     `yaml:"_transform"`
	Services      []Service `yaml:"services"`
	Routes        []Route   `yaml:"routes"`
	Plugins       []Plugin  `yaml:"plugins"`
}

// Service is an upstream. URL ("http://host:port/path", or "unix:/path.sock")
// or Protocol/Host/Port/Path describe it. Timeouts are in milliseconds
// (Kong's defaults: 60000). Retries and Tags are accepted and ignored.
type Service struct {
	ID             string   `yaml:"id"`
	Name           string   `yaml:"name"`
	URL            string   `yaml:"url"`
	Protocol       string   `yaml:"protocol"`
	Host           string   `yaml:"host"`
	Port           int      `yaml:"port"`
	Path           string   `yaml:"path"`
	ConnectTimeout int      `yaml:"connect_timeout"`
	ReadTimeout    int      `yaml:"read_timeout"`
	WriteTimeout   int      `yaml:"write_timeout"`
	Retries        *int     `yaml:"retries"`
	Tags           []string `yaml:"tags"`
	Routes         []Route  `yaml:"routes"`
	Plugins        []Plugin `yaml:"plugins"`
}

// Route matches requests by path prefix and, optionally, method.
// StripPath defaults to true; PathHandling must be "v0" (Kong's default) or
// empty; Protocols may only list http and https.
type Route struct {
	ID           string   `yaml:"id"`
	Name         string   `yaml:"name"`
	Service      *Ref     `yaml:"service"`
	Paths        []string `yaml:"paths"`
	Methods      []string `yaml:"methods"`
	Protocols    []string `yaml:"protocols"`
	StripPath    *bool    `yaml:"strip_path"`
	PreserveHost bool     `yaml:"preserve_host"`
	PathHandling string   `yaml:"path_handling"`
	Tags         []string `yaml:"tags"`
	Plugins      []Plugin `yaml:"plugins"`
}

// Plugin is a plugin entry; Route and Service are only valid at the top
// level. Enabled defaults to true.
type Plugin struct {
	ID           string         `yaml:"id"`
	Name         string         `yaml:"name"`
	InstanceName string         `yaml:"instance_name"`
	Config       map[string]any `yaml:"config"`
	Enabled      *bool          `yaml:"enabled"`
	Route        *Ref           `yaml:"route"`
	Service      *Ref           `yaml:"service"`
	Protocols    []string       `yaml:"protocols"`
	Tags         []string       `yaml:"tags"`
}

// Ref names another entity, written as a plain string (name or id) or as a
// mapping with "name" or "id".
type Ref struct {
	Name string
	ID   string
}

// UnmarshalYAML accepts `service: foo` and `service: {name: foo}`.
func (r *Ref) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		r.Name = n.Value
		r.ID = n.Value
		return nil
	}
	var m struct {
		Name string `yaml:"name"`
		ID   string `yaml:"id"`
	}
	if err := n.Decode(&m); err != nil {
		return err
	}
	if m.Name == "" && m.ID == "" {
		return errors.New("reference needs a name or an id")
	}
	r.Name, r.ID = m.Name, m.ID
	return nil
}

func (r *Ref) String() string {
	if r.Name != "" {
		return r.Name
	}
	return r.ID
}

// LoadDeclarative reads and decodes a declarative configuration file.
// It checks the syntax and the keys; Compile checks the meaning.
func LoadDeclarative(path string) (*Declarative, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read declarative config: %w", err)
	}
	d, err := ParseDeclarative(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// ParseDeclarative decodes a declarative configuration document.
func ParseDeclarative(b []byte) (*Declarative, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var d Declarative
	if err := dec.Decode(&d); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty declarative config")
		}
		return nil, fmt.Errorf("decode declarative config: %w", err)
	}
	if d.FormatVersion != "3.0" {
		return nil, fmt.Errorf("_format_version must be \"3.0\", got %q", d.FormatVersion)
	}
	return &d, nil
}
