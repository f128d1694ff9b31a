package geoip

import "strings"

// Flat databases carry the country alone; the continent (as GeoNames, and
// so MaxMind, assigns it) and EU membership are derived from it here.
var continents = func() map[string]string {
	byContinent := map[string]string{
		"AF": "AO BF BI BJ BW CD CF CG CI CM CV DJ DZ EG EH ER ET GA GH GM GN GQ GW KE KM LR LS LY MA MG ML MR MU MW MZ NA NE NG RE RW SC SD SH SL SN SO SS ST SZ TD TG TN TZ UG YT ZA ZM ZW",
		"AN": "AQ BV GS HM TF",
		"AS": "AE AF AM AZ BD BH BN BT CC CN CX GE HK ID IL IN IO IQ IR JO JP KG KH KP KR KW KZ LA LB LK MM MN MO MV MY NP OM PH PK PS QA SA SG SY TH TJ TL TM TR TW UZ VN YE",
		"EU": "AD AL AT AX BA BE BG BY CH CY CZ DE DK EE ES FI FO FR GB GG GI GR HR HU IE IM IS IT JE LI LT LU LV MC MD ME MK MT NL NO PL PT RO RS RU SE SI SJ SK SM UA VA XK",
		"NA": "AG AI AW BB BL BM BQ BS BZ CA CR CU CW DM DO GD GL GP GT HN HT JM KN KY LC MF MQ MS MX NI PA PM PR SV SX TC TT US VC VG VI",
		"OC": "AS AU CK FJ FM GU KI MH MP NC NF NR NU NZ PF PG PN PW SB TK TO TV UM VU WF WS",
		"SA": "AR BO BR CL CO EC FK GF GY PE PY SR UY VE",
	}
	m := map[string]string{}
	for continent, list := range byContinent {
		for _, c := range strings.Fields(list) {
			m[c] = continent
		}
	}
	return m
}()

var euMembers = func() map[string]bool {
	m := map[string]bool{}
	for _, c := range strings.Fields("AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK") {
		m[c] = true
	}
	return m
}()

// continentOf returns the continent of a country code ("XX" when unknown)
// and whether the country is in the European Union.
func continentOf(country string) (string, bool) {
	c, ok := continents[country]
	if !ok {
		c = "XX"
	}
	return c, euMembers[country]
}

// CountryLocation returns the Location of an ISO country code given by a
// trusted source (a CDN's country header), with continent and EU
// membership derived from it. ok is false for anything but a known
// two-letter code, and for XX.
func CountryLocation(code string) (Location, bool) {
	if len(code) != 2 {
		return Unknown, false
	}
	code = strings.ToUpper(code)
	continent, eu := continentOf(code)
	if continent == "XX" {
		return Unknown, false
	}
	return Location{Country: code, Continent: continent, EU: eu}, true
}
