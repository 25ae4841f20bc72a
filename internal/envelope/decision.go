package envelope

import "github.com/keygate/keygate/internal/apikey"

// DenyCode is the code of an access decision, and the one place decisions
// become codes: "" for apikey.Allow (the denyCode of an allowed verify
// answer), otherwise the code the gateway answers and the sidecar's verify
// answer carries. A decision this switch does not know is Internal, which
// no caller accepts as a denial: it fails closed.
func DenyCode(d apikey.Decision) Code {
	switch d {
	case apikey.Allow:
		return ""
	case apikey.DenyInvalid:
		return InvalidKey
	case apikey.DenyMode:
		return ModeDenied
	case apikey.DenyScope:
		return ScopeDenied
	case apikey.DenyIP:
		return IPDenied
	}
	return Internal
}

// decisionOf is DenyCode read backwards, built from it.
var decisionOf = func() map[Code]apikey.Decision {
	m := make(map[Code]apikey.Decision)
	for d := range 256 {
		if c := DenyCode(apikey.Decision(d)); c != Internal {
			m[c] = apikey.Decision(d)
		}
	}
	return m
}()

// DecisionOf reads a verify answer's denyCode: the decision whose DenyCode
// it is, or false for any other string.
func DecisionOf(denyCode string) (apikey.Decision, bool) {
	d, ok := decisionOf[Code(denyCode)]
	return d, ok
}
