//! OCI distribution client: pull and push images, name normalisation, auth, platform selection.
//! (Filled by the registry issue.)
