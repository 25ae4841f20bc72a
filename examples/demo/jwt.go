package main

import (
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// mintJWT signs a development token like examples/mintjwt does.
func mintJWT(sub, ws, role string) string {
	now := time.Now()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": sub, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"workspaces": map[string]string{ws: role},
	}).SignedString([]byte(jwtSecret))
	if err != nil {
		panic(err)
	}
	return tok
}
