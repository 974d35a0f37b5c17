# HOPPER_SANITIZE_FLAG: the -fsanitize= flag for HOPPER_SANITIZE (empty when
# off); tests/scripts/install-consumer.sh needs it to link a sanitized static
# libhopper into a program built outside this project.
set(HOPPER_SANITIZE_FLAG "")
if(HOPPER_SANITIZE)
  string(REPLACE ";" "," _hp_san "${HOPPER_SANITIZE}")
  set(HOPPER_SANITIZE_FLAG -fsanitize=${_hp_san})
  add_compile_options(${HOPPER_SANITIZE_FLAG} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(${HOPPER_SANITIZE_FLAG})
endif()
