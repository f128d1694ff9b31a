package rules

import (
	"fmt"
	"strings"
)

// countryCodes holds ISO 3166-1 alpha-2 codes, plus XK (Kosovo, as GeoIP
// databases use it) and XX (unknown).
var countryCodes = func() map[string]bool {
	const all = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ " +
		"CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR " +
		"GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP " +
		"KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT " +
		"MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW " +
		"SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG " +
		"UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW XK XX"
	m := map[string]bool{}
	for _, c := range strings.Fields(all) {
		m[c] = true
	}
	return m
}()

// commonCountryMistakes maps codes people write to the ISO code they mean.
var commonCountryMistakes = map[string]string{
	"UK": "GB", // the United Kingdom is GB in ISO 3166-1
	"EL": "GR", // the EU writes Greece as EL
	"EN": "GB",
	"KS": "XK",
}

var continentCodes = map[string]bool{"AF": true, "AN": true, "AS": true, "EU": true, "NA": true, "OC": true, "SA": true, "XX": true}

// normalizeCountry returns the upper-case ISO code for v, or an error that
// says what to write instead.
func normalizeCountry(v string) (string, error) {
	up := strings.ToUpper(strings.TrimSpace(v))
	if countryCodes[up] {
		return up, nil
	}
	if want, ok := commonCountryMistakes[up]; ok {
		return "", fmt.Errorf("%q is not an ISO 3166-1 country code: did you mean %s?", v, want)
	}
	if up == "EU" {
		return "", fmt.Errorf("%q is not a country: use continent: {in: [EU]} or eu: {in: [\"true\"]} (member states)", v)
	}
	return "", fmt.Errorf("%q is not an ISO 3166-1 alpha-2 country code (two letters, e.g. DE, US; XX is unknown)", v)
}

func normalizeContinent(v string) (string, error) {
	up := strings.ToUpper(strings.TrimSpace(v))
	if continentCodes[up] {
		return up, nil
	}
	return "", fmt.Errorf("%q is not a continent code: use one of AF, AN, AS, EU, NA, OC, SA, XX", v)
}
