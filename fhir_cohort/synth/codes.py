"""Codes the synthetic hospital emits.

Criterion codes come only from rows with ``confirmed=yes`` in ``../shared/reference/codes/*.csv``
beside the repository (file named per block). Noise codes (hypertension,
metformin, glucose, ...) are well-known codes checked against public sources; the source is
noted next to each. Never add a code here without a source.
"""

from __future__ import annotations

from typing import NamedTuple

SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
ICD9 = "http://hl7.org/fhir/sid/icd-9-cm"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
V3_INTERP = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
UCUM = "http://unitsofmeasure.org"
COND_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
COND_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
COND_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


class Code(NamedTuple):
    system: str
    code: str
    display: str

    def coding(self) -> dict[str, str]:
        return {"system": self.system, "code": self.code, "display": self.display}

    def concept(self, text: str | None = None) -> dict[str, object]:
        cc: dict[str, object] = {"coding": [self.coding()]}
        if text:
            cc["text"] = text
        return cc


# --- SLE (sle_diagnosis.csv, confirmed yes) -------------------------------------------------
SLE = Code(SNOMED, "55464009", "Systemic lupus erythematosus")
SLE_ORGAN = Code(SNOMED, "239887007", "Systemic lupus erythematosus with organ/system involvement")
SLE_M3214 = Code(ICD10, "M32.14", "Glomerular disease in systemic lupus erythematosus")
# Undotted on purpose: codes compare without dots (docs/architecture.md).
SLE_M329_UNDOTTED = Code(ICD10, "M329", "Systemic lupus erythematosus, unspecified")
SLE_M329 = Code(ICD10, "M32.9", "Systemic lupus erythematosus, unspecified")
SLE_ICD9 = Code(ICD9, "710.0", "Systemic lupus erythematosus")

# --- not SLE / ambiguous (sle_exclusions_druginduced_cutaneous_ambiguous.csv, yes) ----------
LUPUS_UNSPECIFIED = Code(SNOMED, "200936003", "Lupus erythematosus")
DRUG_INDUCED_M320 = Code(ICD10, "M32.0", "Drug-induced systemic lupus erythematosus")
DISCOID_L930 = Code(ICD10, "L93.0", "Discoid lupus erythematosus")

# --- lupus nephritis (lupus_nephritis.csv, yes) ---------------------------------------------
LN = Code(SNOMED, "68815009", "Systemic lupus erythematosus glomerulonephritis syndrome")
LN_CLASS_II = Code(
    SNOMED,
    "4676006",
    "Systemic lupus erythematosus glomerulonephritis syndrome, World Health Organization class II",
)
LN_CLASS_IV = Code(
    SNOMED,
    "36402006",
    "Systemic lupus erythematosus glomerulonephritis syndrome, World Health Organization class IV",
)
SEVERE = Code(SNOMED, "24484000", "Severe")  # the spec names it (E1)

# --- CNS / neuro (neuro_cns_lupus_and_neuro_symptoms.csv, yes) ------------------------------
CNS_LUPUS = Code(SNOMED, "95644001", "Systemic lupus erythematosus encephalitis")
SEIZURE = Code(SNOMED, "91175000", "Seizure")
EPILEPSY = Code(SNOMED, "84757009", "Epilepsy")
PSYCHOSIS = Code(SNOMED, "69322001", "Psychotic disorder")
HEADACHE = Code(SNOMED, "25064002", "Headache")
MIGRAINE = Code(SNOMED, "37796009", "Migraine")

# --- pregnancy / lactation (pregnancy_lactation.csv, yes) -----------------------------------
PREGNANCY = Code(SNOMED, "77386006", "Pregnancy")
LACTATION = Code(SNOMED, "866041003", "Mother currently breastfeeding")
DELIVERY_O80 = Code(ICD10, "O80", "Encounter for full-term uncomplicated delivery")
PREGNANCY_STATUS = Code(LOINC, "82810-3", "Pregnancy status")
HCG_URINE = Code(LOINC, "2106-3", "Choriogonadotropin (pregnancy test) [Presence] in Urine")

# --- serious comorbidity (not in the reference files; see the brief and the
# value_sets/serious_comorbidity.json membership test) --------------------------------------
HEART_FAILURE = Code(SNOMED, "84114007", "Heart failure")
HEART_FAILURE_I509 = Code(ICD10, "I50.9", "Heart failure, unspecified")
HIV_B20 = Code(ICD10, "B20", "Human immunodeficiency virus [HIV] disease")
# From value_sets/serious_comorbidity.json (sources recorded there; confirmed=yes).
MALIGNANCY = Code(SNOMED, "363346000", "Malignant neoplastic disease")
BREAST_CANCER = Code(SNOMED, "254837009", "Malignant neoplasm of breast")
ESKD = Code(SNOMED, "46177005", "End-stage renal disease")

# --- autoantibody labs (autoantibody_labs_loinc.csv, yes) -----------------------------------
DSDNA_IU = Code(LOINC, "5130-0", "DNA double strand Ab [Units/volume] in Serum")
DSDNA_TITER = Code(LOINC, "11013-0", "DNA double strand Ab [Titer] in Serum")
DSDNA_IF = Code(
    LOINC,
    "6457-6",
    "DNA double strand Ab [Presence] in Serum by Immunofluorescence (IF) Crithidia luciliae",
)
# No anti-histone code: the only confirmed one (109974-6) is an order term, not in the
# autoantibodies value set.
NUCLEOSOME = Code(LOINC, "89506-0", "Nucleosome Ab [Presence] in Serum by Line blot")
SM_UNITS = Code(LOINC, "11090-8", "Smith extractable nuclear Ab [Units/volume] in Serum")
# Sm/RNP: the only exception to confirmed=yes. The spec requires that Sm/RNP counts as anti-Sm;
# the reference file has no confirmed Sm/RNP LOINC, 14030-1 is `partial` there (code seen in lab
# catalogues, long name unread) and is a member of value_sets/autoantibodies.json.
SM_RNP = Code(LOINC, "14030-1", "Sm/RNP Ab")
SM_IF = Code(
    LOINC, "17591-9", "Smith extractable nuclear Ab [Presence] in Serum by Immunofluorescence"
)

# --- result values (result_positive_interpretation.csv, yes) --------------------------------
POSITIVE = Code(SNOMED, "10828004", "Positive")
NEGATIVE = Code(SNOMED, "260385009", "Negative")
I_POS = Code(V3_INTERP, "POS", "Positive")
I_NEG = Code(V3_INTERP, "NEG", "Negative")
I_HIGH = Code(V3_INTERP, "H", "High")
I_NORMAL = Code(V3_INTERP, "N", "Normal")
I_IND = Code(V3_INTERP, "IND", "Indeterminate")

# --- routes (value_sets/non_systemic_routes.json, sources recorded there) ------------------
ROUTE_TOPICAL = Code(SNOMED, "6064005", "Topical route")
ROUTE_RESPIRATORY = Code(SNOMED, "447694001", "Respiratory tract route")

# --- medications: RxNorm ingredients (medications_ingredients_atc.csv, yes) -----------------
PREDNISONE = Code(RXNORM, "8640", "prednisone")
METHYLPREDNISOLONE = Code(RXNORM, "6902", "methylprednisolone")
HYDROCORTISONE = Code(RXNORM, "5492", "hydrocortisone")
MMF = Code(RXNORM, "68149", "mycophenolate mofetil")
MPA = Code(RXNORM, "7145", "mycophenolic acid")
AZATHIOPRINE = Code(RXNORM, "1256", "azathioprine")
METHOTREXATE = Code(RXNORM, "6851", "methotrexate")
TACROLIMUS = Code(RXNORM, "42316", "tacrolimus")
CYCLOPHOSPHAMIDE = Code(RXNORM, "3002", "cyclophosphamide")
RITUXIMAB = Code(RXNORM, "121191", "rituximab")
BELIMUMAB = Code(RXNORM, "1092437", "belimumab")
VOCLOSPORIN = Code(RXNORM, "2475166", "voclosporin")
HYDROXYCHLOROQUINE = Code(RXNORM, "5521", "hydroxychloroquine")

# --- medications: RxNorm products (medications_products.csv, yes) ---------------------------
PREDNISONE_5_SCD = Code(RXNORM, "312617", "prednisone 5 MG Oral Tablet")
CELLCEPT_500_SBD = Code(RXNORM, "616435", "mycophenolate mofetil 500 MG Oral Tablet [Cellcept]")
MTX_25_SCD = Code(RXNORM, "105585", "methotrexate 2.5 MG Oral Tablet")
RITUXIMAB_SCD = Code(RXNORM, "1657867", "50 ML rituximab 10 MG/ML Injection")
BENLYSTA_400_SBD = Code(RXNORM, "1656402", "belimumab 400 MG Injection [Benlysta]")
HC_CREAM_SCD = Code(RXNORM, "106258", "hydrocortisone 10 MG/ML Topical Cream")
BUDESONIDE_DPI_SCD = Code(
    RXNORM, "966527", "60 ACTUAT budesonide 0.09 MG/ACTUAT Dry Powder Inhaler"
)

# --- noise (not criterion codes) ------------------------------------------------------------
# SNOMED 38341003 / 44054006: VSAC/DICOM CID 3640 and HL7 example instances (code search).
HYPERTENSION = Code(SNOMED, "38341003", "Hypertensive disorder, systemic arterial")
DIABETES_T2 = Code(SNOMED, "44054006", "Type 2 diabetes mellitus")
# ICD-10-CM I10 / E11.9: CMS ICD-10-CM (frequency table seen in code search).
HYPERTENSION_I10 = Code(ICD10, "I10", "Essential (primary) hypertension")
DIABETES_E119 = Code(ICD10, "E11.9", "Type 2 diabetes mellitus without complications")
# RxNorm ingredients: cpicpgx/cpic-schema drug.sql (metformin 6809, atorvastatin 83367);
# lisinopril 29046 seen in several RxNav-derived tables (code search).
LISINOPRIL = Code(RXNORM, "29046", "lisinopril")
METFORMIN = Code(RXNORM, "6809", "metformin")
ATORVASTATIN = Code(RXNORM, "83367", "atorvastatin")
# LOINC: Outburn-IL LRC referral value set and NAPKON GECCO+ value sets (code search).
GLUCOSE = Code(LOINC, "2345-7", "Glucose [Mass/volume] in Serum or Plasma")
CREATININE = Code(LOINC, "2160-0", "Creatinine [Mass/volume] in Serum or Plasma")
# LOINC vitals: sophie-kearney/CVD_multimodal_prediction loinc_feature_mappings.md.
BODY_WEIGHT = Code(LOINC, "29463-7", "Body weight")
HEART_RATE = Code(LOINC, "8867-4", "Heart rate")
# SNOMED 185349003 "Encounter for check up": CMS122 Office Visit value set (code search).
CHECKUP = Code(SNOMED, "185349003", "Encounter for check up")
AMBULATORY = Code(ACT_CODE, "AMB", "ambulatory")
# SNOMED 73761001 "Colonoscopy": HL7 FHIR example instances and several code lists (code search).
COLONOSCOPY = Code(SNOMED, "73761001", "Colonoscopy")

# --- v1.1 spellings of code systems (spec "Clarifications (v1.1)", Code systems) -----------
SNOMED_OID = "urn:oid:2.16.840.1.113883.6.96"
ICD10CM_OID = "urn:oid:2.16.840.1.113883.6.90"
LOINC_OID = "urn:oid:2.16.840.1.113883.6.1"
RXNORM_OID = "urn:oid:2.16.840.1.113883.6.88"
ICD10_WHO = "http://hl7.org/fhir/sid/icd-10"
# HL7 v2 table 0078 (abnormal flags): current and pre-THO URIs, both seen in public FHIR mappers
# (e.g. HAPI HL7v2-to-FHIR converters use the current URI, DSTU2-era code the older one).
V2_0078 = "http://terminology.hl7.org/CodeSystem/v2-0078"
V2_0078_OLD = "http://hl7.org/fhir/v2/0078"
V3_ROUTE = "http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration"
EDQM = "http://standardterms.edqm.eu"
NDC = "http://hl7.org/fhir/sid/ndc"
# ICD-10-PCS, spelled as in VSAC "Delivery Live Births" 2.16.840.1.113883.3.464.1003.111.12.1015
# (cqframework/ecqm-content-r4@04f5c4919e:input/vocabulary/valueset/external/...1015.json).
ICD10PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
MR_CATEGORY = "http://terminology.hl7.org/CodeSystem/medicationrequest-category"
MR_COURSE = "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy"

# Same concepts as above, other spellings.
SLE_SNOMED_OID = Code(SNOMED_OID, "55464009", "Systemic lupus erythematosus")
SLE_M329_OID = Code(ICD10CM_OID, "M32.9", "Systemic lupus erythematosus, unspecified")
# A blank where the dot goes: ICD codes count with or without dot or blanks (v1.1).
SLE_M329_BLANK = Code(ICD10, "M32 9", "Systemic lupus erythematosus, unspecified")
DSDNA_IF_OID = Code(LOINC_OID, "6457-6", DSDNA_IF.display)
AZATHIOPRINE_OID = Code(RXNORM_OID, "1256", "azathioprine")
# WHO ICD-10 M32.1 / M32.0: same categories and titles as ICD-10-CM (simple-icd-10-cm 1.5.0:
# M32.1 "Systemic lupus erythematosus with organ or system involvement").
SLE_WHO_M321 = Code(
    ICD10_WHO, "M32.1", "Systemic lupus erythematosus with organ or system involvement"
)
SLE_WHO_M321_UNDOTTED = Code(
    ICD10_WHO, "M321", "Systemic lupus erythematosus with organ or system involvement"
)
DRUG_INDUCED_WHO_M320 = Code(ICD10_WHO, "M32.0", "Drug-induced systemic lupus erythematosus")
I2_POS = Code(V2_0078, "POS", "Positive")
I2_OLD_HIGH = Code(V2_0078_OLD, "H", "High")
I2_OLD_NEG = Code(V2_0078_OLD, "N", "Normal")
I_EQUIVOCAL = Code(V3_INTERP, "E", "Equivocal")  # value_sets/interpretation_equivocal.json

# --- v1.1 medications -------------------------------------------------------------------------
# NDC package codes (11-digit 5-4-2, as RxNorm stores them), read on public label pages:
# azathioprine 50 mg tablet, Glenmark, package 68462-502-01, RxCUI 197388
# (pharmacy-near-me.com/drug/Azathioprine-68462-502); prednisone 5 mg tablet, package
# 67296-1419-3 (pillsync.com/drug/prednisone-5-mg/ROUND_WHITE_058/67296-1419-3).
AZATHIOPRINE_NDC = Code(NDC, "68462050201", "Azathioprine 50 MG Oral Tablet")
PREDNISONE_NDC = Code(NDC, "67296141903", "Prednisone 5 MG Oral Tablet")
# SNOMED CT substance: 372574004 "Azathioprine (substance)" (CH/EU IPS and SNOMED-ATC maps
# found by code search; same code, display and designations in several value sets).
AZATHIOPRINE_SUBSTANCE = Code(SNOMED, "372574004", "Azathioprine (substance)")
BUDESONIDE = Code(RXNORM, "19831", "budesonide")  # medications_ingredients_atc.csv, yes
# HL7 v3 RouteOfAdministration IPINHL "Inhalation, respiratory" (HAPI V3RouteOfAdministration,
# THO v3-Inhalation value set; code search).
ROUTE_V3_INHALATION = Code(V3_ROUTE, "IPINHL", "Inhalation, respiratory")
# EDQM Standard Terms 20003000 "Cutaneous use" (CH EMED IG dosage examples, EDQM route maps).
ROUTE_EDQM_CUTANEOUS = Code(EDQM, "20003000", "Cutaneous use")
# SNOMED dose form 385101003 "Ointment" (HL7 FHIR Medication example form; code search).
FORM_OINTMENT = Code(SNOMED, "385101003", "Ointment")
MR_INPATIENT = Code(MR_CATEGORY, "inpatient", "Inpatient")
MR_COMMUNITY = Code(MR_CATEGORY, "community", "Community")
MR_ACUTE = Code(MR_COURSE, "acute", "Short course (acute) therapy")

# --- v1.1 pregnancy / lactation ---------------------------------------------------------------
# ICD-10-CM titles from simple-icd-10-cm 1.5.0 (CMS ICD-10-CM); all leaf codes.
PREG_TEST_POSITIVE_Z3201 = Code(ICD10, "Z32.01", "Encounter for pregnancy test, result positive")
SUPERVISION_Z3400 = Code(
    ICD10, "Z34.00", "Encounter for supervision of normal first pregnancy, unspecified trimester"
)
HIGH_RISK_O0993 = Code(
    ICD10, "O09.93", "Supervision of high risk pregnancy, unspecified, third trimester"
)
MATERNAL_CARE_O34211 = Code(
    ICD10, "O34.211", "Maternal care for low transverse scar from previous cesarean delivery"
)
FALSE_LABOUR_O479 = Code(ICD10, "O47.9", "False labor, unspecified")
SUPPRESSED_LACTATION_O925 = Code(ICD10, "O92.5", "Suppressed lactation")
# LOINC 63895-7 "Breastfeeding status" (TH Core IG postnatal example; code search).
BREASTFEEDING_STATUS = Code(LOINC, "63895-7", "Breastfeeding status")
HCG_QUANT = Code(LOINC, "21198-7", "Choriogonadotropin.beta subunit in Serum or Plasma")  # hcg.json
# Delivery procedures: SNOMED from value_sets/delivery.json; ICD-10-PCS 10E0XZZ from VSAC
# "Delivery Live Births" 2.16.840.1.113883.3.464.1003.111.12.1015 (see ICD10PCS above).
CESAREAN = Code(SNOMED, "11466000", "Cesarean section")
DELIVERY_PCS = Code(ICD10PCS, "10E0XZZ", "Delivery of Products of Conception, External Approach")

# --- v1.1 chronic illness ---------------------------------------------------------------------
# VSAC "Malignant Neoplasms" 2.16.840.1.113883.3.464.1003.1193 v20220927
# (cqframework/ecqm-content-qicore-2025@db5a7e1433:input/vocabulary/valueset/external/).
BCC_SKIN_C4491 = Code(ICD10, "C44.91", "Basal cell carcinoma of skin, unspecified")
MERKEL_C4A9 = Code(ICD10, "C4A.9", "Merkel cell carcinoma, unspecified")
CARCINOID_C7A00 = Code(ICD10, "C7A.00", "Malignant carcinoid tumor of unspecified site")
# VSAC "Heart Failure" 2.16.840.1.113883.3.526.3.376 v20210218 (same repository); Synthea's code.
CHF_CHRONIC = Code(SNOMED, "88805009", "Chronic congestive heart failure (disorder)")
# simple-icd-10-cm 1.5.0 (CMS ICD-10-CM): Z99.2 "Dependence on renal dialysis".
DIALYSIS_DEPENDENCE_Z992 = Code(ICD10, "Z99.2", "Dependence on renal dialysis")
# VSAC "Dialysis Services" 2.16.840.1.113883.3.464.1003.109.12.1013 (same repository).
HEMODIALYSIS = Code(SNOMED, "302497006", "Hemodialysis (procedure)")

CRITERIA: tuple[str, ...] = (
    "age",
    "sle",
    "therapy",
    "autoantibody",
    "lupus_nephritis",
    "cns_lupus",
    "pregnancy_lactation",
    "chronic_illness",
)
INCLUSIONS: tuple[str, ...] = CRITERIA[:4]
EXCLUSIONS: tuple[str, ...] = CRITERIA[4:]
# The answer each criterion gives a patient with no record that concerns it.
NO_RECORD_ANSWERS: dict[str, str] = {
    "sle": "not_met",
    "therapy": "not_met",
    "autoantibody": "unknown",
    "lupus_nephritis": "clear",
    "cns_lupus": "clear",
    "pregnancy_lactation": "clear",
    "chronic_illness": "clear",
}
INCLUSION_ANSWERS: tuple[str, ...] = ("met", "not_met", "unknown")
EXCLUSION_ANSWERS: tuple[str, ...] = ("clear", "excluded", "review")
