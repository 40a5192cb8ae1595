# install-runtime: pretends to install a runtime, reporting ::progress markers.
# Argument: the version.
version=${1:-1.24}
echo "Installing runtime $version"
for step in 10 25 40 55 70 85 100; do
  sleep 1
  case $step in
    10) msg="downloading runtime-$version.tar.gz" ;;
    25) msg="verifying signature" ;;
    40) msg="unpacking" ;;
    55) msg="installing into /opt/runtime/$version" ;;
    70) msg="updating alternatives" ;;
    85) msg="running self-test" ;;
    *) msg="done" ;;
  esac
  echo "::progress $step $msg"
  echo "$msg"
done
echo "runtime $version installed"
