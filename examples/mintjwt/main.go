// Command mintjwt mints a development JWT for the management routes:
//
//	mintjwt -secret DEV_SECRET -sub alice -workspace ws_demo -role OWNER [-ttl 1h]
//
// It signs HS256 with the secret given (your manage route's jwt_secret). For
// development only: production JWTs come from your identity provider.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func main() {
	secret := flag.String("secret", os.Getenv("KEYGATE_DEMO_JWT_SECRET"), "HS256 secret (default $KEYGATE_DEMO_JWT_SECRET)")
	sub := flag.String("sub", "alice", "subject")
	ws := flag.String("workspace", "ws_demo", "workspace id")
	role := flag.String("role", "OWNER", "role in that workspace")
	claim := flag.String("roles-claim", "workspaces", "name of the roles claim")
	iss := flag.String("iss", "", "issuer (optional)")
	aud := flag.String("aud", "", "audience (optional)")
	ttl := flag.Duration("ttl", time.Hour, "lifetime")
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), `mintjwt mints a development owner JWT (HS256) for keygate's management
routes, signed with the HS256 secret you pass (your manage route's
jwt_secret). For
development only: production tokens come from your identity provider.

Usage: go run ./examples/mintjwt -secret SECRET [-sub alice] [-workspace ws_demo] [-role OWNER]

Flags:
`)
		flag.PrintDefaults()
	}
	flag.Parse()
	if *secret == "" {
		fmt.Fprintln(os.Stderr, "mintjwt: -secret or KEYGATE_DEMO_JWT_SECRET is required")
		os.Exit(2)
	}
	now := time.Now()
	claims := jwt.MapClaims{
		"sub": *sub, "iat": now.Unix(), "exp": now.Add(*ttl).Unix(),
		*claim: map[string]string{*ws: *role},
	}
	if *iss != "" {
		claims["iss"] = *iss
	}
	if *aud != "" {
		claims["aud"] = *aud
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(*secret))
	if err != nil {
		fmt.Fprintln(os.Stderr, "mintjwt:", err)
		os.Exit(1)
	}
	fmt.Println(tok)
}
