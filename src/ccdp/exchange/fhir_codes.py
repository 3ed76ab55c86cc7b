"""FHIR constants of the ccdp export: profile and extension URLs, code systems, code maps.

Profile URLs are the canonical URLs of the PanCareSurPass IG 1.0.0 (`http://hl7.eu/fhir/ig/pcsp`)
and mCODE STU4 (`http://hl7.org/fhir/us/mcode`) FSH sources, read from their `Id:` lines. What
neither IG profiles (a cause of death, a risk group, a trial enrolment ...) is written to base
FHIR R4 resources tagged with a ccdp profile name under the `urn:ccdp:fhir:` namespace, so that an
import can tell every resource apart by `meta.profile` alone. Terms (displays) come from ccdp's own
terminology, never from the IG's code-system fragments (which mislabel some ICD-O-3 codes).
"""

from __future__ import annotations

from functools import cache

PCSP = "http://hl7.eu/fhir/ig/pcsp/StructureDefinition/"
MCODE = "http://hl7.org/fhir/us/mcode/StructureDefinition/"
CCDP = "urn:ccdp:fhir:"
"""ccdp's own namespace (not resolvable): its code systems, identifier systems, extensions and
profile names for what the IGs do not profile."""

# -- profiles --------------------------------------------------------------------------------
BUNDLE = MCODE + "mcode-patient-bundle"
PATIENT = (PCSP + "Patient-eu-pcsp", MCODE + "mcode-cancer-patient")
PRIMARY = (PCSP + "Condition-primaryCancer-eu-pcsp", MCODE + "mcode-primary-cancer-condition")
RELAPSE = (PCSP + "Condition-primaryCancer-eu-pcsp",)
STAGE = (PCSP + "mcode-cancer-stage-group",)
DISEASE_STATUS = (MCODE + "mcode-cancer-disease-status",)
TUMOUR_MARKER = (MCODE + "mcode-tumor-marker-test",)
SPECIMEN = (MCODE + "mcode-human-specimen",)
MED_STATEMENT = (PCSP + "MedicationStatement-eu-pcsp",)
RADIOTHERAPY = (
    PCSP + "Procedure-radiotheraphy-eu-pcsp",
    MCODE + "mcode-radiotherapy-course-summary",
)
SURGERY = (PCSP + "Procedure-surgery-eu-pcsp", MCODE + "mcode-cancer-related-surgical-procedure")
SCT = (PCSP + "Procedure-sct-eu-pcsp",)
OWN_PROCEDURE = (CCDP + "StructureDefinition:other-treatment",)
OWN_FINDING = (CCDP + "StructureDefinition:finding",)
"""A tumour or event finding no IG profiles (risk group, immunophenotype, WBC, CNS status,
bone-marrow blasts, death as a tumour event, cause of death)."""
OWN_CONSENT = (CCDP + "StructureDefinition:consent",)
OWN_RESEARCH_SUBJECT = (CCDP + "StructureDefinition:trial-enrolment",)

ALL_PROFILES = sorted(
    {
        BUNDLE,
        *PATIENT,
        *PRIMARY,
        *STAGE,
        *DISEASE_STATUS,
        *TUMOUR_MARKER,
        *SPECIMEN,
        *MED_STATEMENT,
        *RADIOTHERAPY,
        *SURGERY,
        *SCT,
        *OWN_PROCEDURE,
        *OWN_FINDING,
        *OWN_CONSENT,
        *OWN_RESEARCH_SUBJECT,
    }
)

# -- extensions ------------------------------------------------------------------------------
EXT_HISTOLOGY = MCODE + "mcode-histology-morphology-behavior"
EXT_LATERALITY = PCSP + "mcode-laterality-qualifier"
EXT_LATERALITY_MCODE = MCODE + "mcode-laterality-qualifier"
"""The PCSP and mCODE laterality extensions (same Id, two canonicals): both written, as each
profile slices bodySite.extension by its own."""
EXT_RELATED_CONDITION = MCODE + "mcode-related-condition"
EXT_OCCURRED_FOLLOWING = "http://hl7.org/fhir/StructureDefinition/condition-occurredFollowing"
EXT_DAR = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
EXT_LAST_CONTACT = CCDP + "extension:last-contact-date"
EXT_FRONTLINE_END = CCDP + "extension:frontline-end-date"
EXT_END_DATE = CCDP + "extension:treatment-end-date"
EXT_TRIAL_RISK = CCDP + "extension:trial-risk-group"
EXT_BASIS = CCDP + "extension:basis-of-diagnosis"
"""Not Condition.evidence.code: mCODE binds it (required) to SNOMED test codes that the IACR
basis-of-diagnosis codes do not map onto one to one."""

EXTENSIONS = sorted(
    {
        EXT_HISTOLOGY,
        EXT_LATERALITY,
        EXT_LATERALITY_MCODE,
        EXT_BASIS,
        EXT_RELATED_CONDITION,
        EXT_OCCURRED_FOLLOWING,
        EXT_DAR,
        EXT_LAST_CONTACT,
        EXT_FRONTLINE_END,
        EXT_END_DATE,
        EXT_TRIAL_RISK,
    }
)

# -- code systems ----------------------------------------------------------------------------
ICDO3 = "http://terminology.hl7.org/CodeSystem/icd-o-3"
ICCC3 = "http://terminology.hl7.org/CodeSystem/iccc-3"
"""Provisional: the PCSP IG's alias says this URI is not yet assigned by HL7."""
SCT_SYS = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
DAR_SYS = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
SPTY = "http://terminology.hl7.org/CodeSystem/v2-0487"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
CONSENT_PREFIX_SYSTEMS = {
    "DUO": "http://purl.obolibrary.org/obo/duo",
    "MONDO": "http://purl.obolibrary.org/obo/mondo",
}


def ccdp_system(name: str) -> str:
    """ccdp's code system (or identifier system) for one model field or key."""
    return f"{CCDP}{name}"


SYS_EVENT_TYPE = ccdp_system("event_type")
SYS_TREATMENT_TYPE = ccdp_system("treatment_type")
SYS_FINDING = ccdp_system("finding")
SYS_MARKER = ccdp_system("biomarker")

# -- code maps (ccdp value -> standard coding) ------------------------------------------------
LATERALITY_SCT = {
    "right": ("24028007", "Right"),
    "left": ("7771000", "Left"),
    "bilateral": ("51440002", "Right and left"),
    "unilateral_unspecified": ("66459002", "Unilateral"),
}
LATERALITY_DAR = {"not_paired": "not-applicable", "unknown": "unknown"}

SPECIMEN_SPTY = {
    "bone_marrow": ("MAR", "Marrow"),
    "peripheral_blood": ("BLD", "Whole blood"),
    "tumour_tissue": ("TUMOR", "Tumor"),
    "csf": ("CSF", "Cerebral spinal fluid"),
}

DISEASE_STATUS_SCT = {
    "progression": ("271299001", "Patient's condition worsened (finding)"),
    "remission": ("268910001", "Patient's condition improved (finding)"),
}

RELAPSE_SITE_TOPOGRAPHY = {"bone_marrow": "C42.1", "cns": "C72.9", "testis": "C62.9"}

MEDICATION_TYPES = ("chemotherapy", "immunotherapy", "targeted", "car_t")

BASIS_LABELS = {
    0: "Death certificate only",
    1: "Clinical",
    2: "Clinical investigation",
    4: "Specific tumour markers",
    5: "Cytology",
    6: "Histology of a metastasis",
    7: "Histology of the primary tumour",
    9: "Unknown",
}


@cache
def morphology_labels() -> dict[str, str]:
    """ICD-O-3 4-digit histology -> preferred term (ccdp's terminology)."""
    from ccdp.terminology.icdo3 import morphology_codes

    codes = morphology_codes()
    return dict(zip(codes["code"].astype(str), codes["label"].astype(str), strict=True))


@cache
def topography_labels() -> dict[str, str]:
    """ICD-O-3 topography `C42.1` -> title (ccdp's terminology)."""
    from ccdp.terminology.icdo3 import topography_codes

    codes = topography_codes()
    return dict(zip(codes["code"].astype(str), codes["label"].astype(str), strict=True))


@cache
def iccc_recode_labels() -> dict[str, str]:
    """ICCC-3 recode (`032`) -> its subgroup's label (ccdp's terminology, 2017 edition)."""
    from ccdp.terminology.iccc import iccc_codes

    codes = iccc_codes()
    labels = dict(zip(codes["recode"], codes["subgroup_label"], strict=True))
    labels.setdefault("999", "Unclassified")
    return {str(k): str(v) for k, v in labels.items()}
